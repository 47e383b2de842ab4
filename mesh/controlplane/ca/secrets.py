"""SVIDs as Envoy SDS secrets, named as Istio names them: `default` (the proxy's cert) and `ROOTCA`."""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2

from mesh.controlplane.ca.authority import SVID

DEFAULT = "default"
ROOTCA = "ROOTCA"


def workload_secrets(svid: SVID, root_pem: bytes) -> list[secret_pb2.Secret]:
    return [
        secret_pb2.Secret(
            name=DEFAULT,
            tls_certificate=common_pb2.TlsCertificate(
                certificate_chain=base_pb2.DataSource(inline_bytes=svid.cert_chain_pem),
                private_key=base_pb2.DataSource(inline_bytes=svid.key_pem),
            ),
        ),
        secret_pb2.Secret(
            name=ROOTCA,
            validation_context=common_pb2.CertificateValidationContext(
                trusted_ca=base_pb2.DataSource(inline_bytes=root_pem)
            ),
        ),
    ]
