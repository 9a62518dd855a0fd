//! RKE2's config.yaml, drop-ins, the Cilium HelmChartConfig and the seeded manifests.
