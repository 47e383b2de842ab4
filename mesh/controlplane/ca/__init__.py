"""The Citadel role: a mesh CA issuing SPIFFE SVIDs, delivered to proxies over SDS."""

from mesh.controlplane.ca.authority import SVID, CertificateAuthority

__all__ = ["SVID", "CertificateAuthority"]
