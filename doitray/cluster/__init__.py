"""Cluster files checked offline (Ray launcher, KubeRay) and the local multi-node test cluster."""
