"""The kubernetes target: a Pulumi program (kind or an existing cluster + Istio's official Helm charts + workloads +
policies) and the Automation API driver behind `mesh up --target kubernetes`. Runs live where docker, kind and the
pulumi CLI exist (GitHub Actions); here it is tested with Pulumi's mocks and by validating everything it renders
against Kubernetes' schemas, the pinned Istio CRD schemas and the pinned charts' value paths."""
