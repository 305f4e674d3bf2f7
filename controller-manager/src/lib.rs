//! kplane's controller-manager: kube-runtime controllers that talk to the cluster only through the API.
