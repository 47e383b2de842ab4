"""Transport sockets: Istio mTLS (ISTIO_MUTUAL) upstream and the inbound side, certificates from SDS; TLS
origination (DestinationRule SIMPLE/MUTUAL) toward services and ServiceEntries."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from envoy.type.matcher.v3 import string_pb2
from google.protobuf import wrappers_pb2

from mesh.api.networking import ClientTLSSettings
from mesh.controlplane.ca.secrets import DEFAULT, ROOTCA
from mesh.controlplane.translate.protos import ads, packed

TLS_SOCKET = "envoy.transport_sockets.tls"
# where SIMPLE/MUTUAL origination without caCertificates finds its roots: the system bundle (Istio's default)
SYSTEM_ROOTS = Path("/etc/ssl/certs/ca-certificates.crt")


def _sds(name: str) -> secret_pb2.SdsSecretConfig:
    return secret_pb2.SdsSecretConfig(name=name, sds_config=ads())


def _common(peer_sans: list[str] | None) -> tls_pb2.CommonTlsContext:
    validation = common_pb2.CertificateValidationContext()
    for san in peer_sans or []:
        validation.match_typed_subject_alt_names.append(
            common_pb2.SubjectAltNameMatcher(
                san_type=common_pb2.SubjectAltNameMatcher.URI, matcher=string_pb2.StringMatcher(exact=san)
            )
        )
    return tls_pb2.CommonTlsContext(
        tls_certificate_sds_secret_configs=[_sds(DEFAULT)],
        combined_validation_context=tls_pb2.CommonTlsContext.CombinedCertificateValidationContext(
            default_validation_context=validation, validation_context_sds_secret_config=_sds(ROOTCA)
        ),
        tls_params=common_pb2.TlsParameters(tls_minimum_protocol_version=common_pb2.TlsParameters.TLSv1_2),
    )


def istio_mutual_upstream(sni: str, peer_identities: list[str], alpn: Sequence[str] = ()) -> base_pb2.TransportSocket:
    """Client side: present our SVID, accept only the destination's service accounts."""
    ctx = tls_pb2.UpstreamTlsContext(common_tls_context=_common(peer_identities), sni=sni)
    ctx.common_tls_context.alpn_protocols.extend(alpn)
    return base_pb2.TransportSocket(name=TLS_SOCKET, typed_config=packed(ctx))


def istio_mutual_downstream() -> base_pb2.TransportSocket:
    """Server side: require a client certificate chained to the mesh root (identity checks belong to RBAC)."""
    ctx = tls_pb2.DownstreamTlsContext(
        common_tls_context=_common(None), require_client_certificate=wrappers_pb2.BoolValue(value=True)
    )
    return base_pb2.TransportSocket(name=TLS_SOCKET, typed_config=packed(ctx))


_TLS_VERSIONS = {
    "TLSV1_0": common_pb2.TlsParameters.TLSv1_0,
    "TLSV1_1": common_pb2.TlsParameters.TLSv1_1,
    "TLSV1_2": common_pb2.TlsParameters.TLSv1_2,
    "TLSV1_3": common_pb2.TlsParameters.TLSv1_3,
}


def gateway_downstream(credential: str, *, mutual: bool, min_version: str | None) -> base_pb2.TransportSocket:
    """Gateway TLS termination, certificate from SDS `kubernetes://<credential>`; MUTUAL also checks client certs
    against `kubernetes://<credential>-cacert` (Istio's names)."""
    from mesh.controlplane.ca.credentials import credential_ca_secret_name, credential_secret_name

    common = tls_pb2.CommonTlsContext(
        tls_certificate_sds_secret_configs=[_sds(credential_secret_name(credential))],
        alpn_protocols=["h2", "http/1.1"],
    )
    if min_version and min_version in _TLS_VERSIONS:
        common.tls_params.tls_minimum_protocol_version = _TLS_VERSIONS[min_version]
    if mutual:
        common.validation_context_sds_secret_config.CopyFrom(_sds(credential_ca_secret_name(credential)))
    ctx = tls_pb2.DownstreamTlsContext(
        common_tls_context=common, require_client_certificate=wrappers_pb2.BoolValue(value=mutual)
    )
    return base_pb2.TransportSocket(name=TLS_SOCKET, typed_config=packed(ctx))


def origination_tls(tls: ClientTLSSettings, host: str) -> base_pb2.TransportSocket:
    """SIMPLE (verify the server) or MUTUAL (also present a client certificate), as Istio's cluster_tls.go:
    certificates from `credentialName` over SDS (`kubernetes://NAME`, CA `kubernetes://NAME-cacert`) or from the
    files named by clientCertificate/privateKey/caCertificates; the server checked against subjectAltNames; SNI
    the given `sni`, else the host."""
    from mesh.controlplane.ca.credentials import credential_ca_secret_name, credential_secret_name

    common = tls_pb2.CommonTlsContext()
    validation = common_pb2.CertificateValidationContext()
    for san in tls.subject_alt_names:
        kind = common_pb2.SubjectAltNameMatcher.URI if "://" in san else common_pb2.SubjectAltNameMatcher.DNS
        validation.match_typed_subject_alt_names.append(
            common_pb2.SubjectAltNameMatcher(san_type=kind, matcher=string_pb2.StringMatcher(exact=san))
        )
    if tls.credential_name:
        if tls.mode == "MUTUAL":
            common.tls_certificate_sds_secret_configs.append(_sds(credential_secret_name(tls.credential_name)))
        common.combined_validation_context.default_validation_context.CopyFrom(validation)
        common.combined_validation_context.validation_context_sds_secret_config.CopyFrom(
            _sds(credential_ca_secret_name(tls.credential_name))
        )
    else:
        if tls.mode == "MUTUAL" and tls.client_certificate and tls.private_key:
            common.tls_certificates.append(
                common_pb2.TlsCertificate(
                    certificate_chain=base_pb2.DataSource(filename=tls.client_certificate),
                    private_key=base_pb2.DataSource(filename=tls.private_key),
                )
            )
        roots = tls.ca_certificates or (str(SYSTEM_ROOTS) if SYSTEM_ROOTS.exists() else "")
        if roots:
            validation.trusted_ca.CopyFrom(base_pb2.DataSource(filename=roots))
        common.validation_context.CopyFrom(validation)
    ctx = tls_pb2.UpstreamTlsContext(common_tls_context=common, sni=tls.sni or host.lstrip("*."))
    return base_pb2.TransportSocket(name=TLS_SOCKET, typed_config=packed(ctx))
