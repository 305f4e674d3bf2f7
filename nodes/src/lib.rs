//! kplane's nodes: simulated kubelets and the scheduler, talking to the cluster only through the API.
