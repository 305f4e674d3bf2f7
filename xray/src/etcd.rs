//! `kplane xray etcd`: the `/registry` tree and a live stream of writes. (Being written.)
