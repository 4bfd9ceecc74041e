"""TLS on both sides: our receiver requires a client certificate from the configured CA, and our SCU
(the sender's association code, used here through `echo`) presents one and verifies the server's."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import free_port
from receiver_helpers import ct_series, make_config
from sqlalchemy import func, select

from dicom_node.db.engine import Database
from dicom_node.db.schema import Instance
from dicom_node.delivery.association import client_ssl_context, make_ae, open_association
from dicom_node.delivery.echo import echo
from dicom_node.errors import DeliveryError
from dicom_node.receiver.scp import start_receiver


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _issue(folder: Path, name: str, subject: str, ca: str | None, ext: str = "") -> None:
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
             "-subj", subject, cwd=folder)
    if ext:
        (folder / f"{name}.ext").write_text(ext)
    sign = ["-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial"] if ca else ["-signkey", f"{name}.key"]
    _openssl("x509", "-req", "-in", f"{name}.csr", *sign, "-out", f"{name}.crt", "-days", "2", "-sha256",
             *(["-extfile", f"{name}.ext"] if ext else []), cwd=folder)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
             "-days", "2", "-subj", "/CN=dicom-node test CA", cwd=folder)
    _issue(folder, "server", "/CN=localhost", "ca", "subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _issue(folder, "client", "/CN=pacs", "ca")
    _issue(folder, "rogue", "/CN=rogue", None)  # self-signed: not from our CA
    return folder


def _config(tmp: Path, pki: Path, port: int, client: str):  # type: ignore[no-untyped-def]
    tmp.mkdir(parents=True, exist_ok=True)
    tls_server = {"enabled": True, "cert": str(pki / "server.crt"), "key": str(pki / "server.key"),
                  "ca": str(pki / "ca.crt"), "require_client_cert": True}
    tls_client = {"enabled": True, "cert": str(pki / f"{client}.crt"), "key": str(pki / f"{client}.key"),
                  "ca": str(pki / "ca.crt")}
    return make_config(
        tmp, port=port, node={"tls": tls_server},
        callers=[{"ae_title": "DICOMNODE"}],  # the node's own SCU calls in with our AE title
        destinations=[{"name": "self", "ae_title": "DICOMNODE", "host": "127.0.0.1", "port": port, "tls": tls_client}],
    )


def test_tls_echo_and_store_with_client_certificate(tmp_path: Path, pki: Path) -> None:
    port = free_port()
    config = _config(tmp_path, pki, port, "client")
    db = Database(config.database_url)
    receiver = start_receiver(config, db)
    try:
        assert echo(config, "self") == 0x0000

        ds = ct_series(1)[0]
        ae = make_ae(config)
        assoc = open_association(ae, config.destination("self"), [(str(ds.SOPClassUID), ["1.2.840.10008.1.2.1"])])
        try:
            status = assoc.send_c_store(ds)
        finally:
            assoc.release()
        assert int(status.Status) == 0x0000
        with db.read() as session:
            assert session.scalar(select(func.count()).select_from(Instance)) == 1
    finally:
        receiver.shutdown()


def test_tls_refuses_a_client_certificate_from_another_ca(tmp_path: Path, pki: Path) -> None:
    port = free_port()
    server_config = _config(tmp_path / "server", pki, port, "client")
    rogue_config = _config(tmp_path / "rogue", pki, port, "rogue")
    receiver = start_receiver(server_config, Database(server_config.database_url))
    try:
        with pytest.raises(DeliveryError):
            echo(rogue_config, "self")
    finally:
        receiver.shutdown()


def test_client_context_verifies_the_server(pki: Path, tmp_path: Path) -> None:
    """Our SCU refuses a server whose certificate is not from the configured CA."""
    port = free_port()
    server = _config(tmp_path / "server", pki, port, "client")
    receiver = start_receiver(server, Database(server.database_url))
    other_ca = tmp_path / "other"
    other_ca.mkdir()
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
             "-days", "2", "-subj", "/CN=another CA", cwd=other_ca)
    client = _config(tmp_path / "client", pki, port, "client")
    dest = client.destination("self")
    bad_tls = type(dest.tls)(enabled=True, cert=dest.tls.cert, key=dest.tls.key, ca=other_ca / "ca.crt")
    try:
        ctx = client_ssl_context(bad_tls)
        assert ctx.verify_mode.name == "CERT_REQUIRED"
        with pytest.raises(DeliveryError):
            open_association(
                make_ae(client), dest.replace(tls=bad_tls),
                [("1.2.840.10008.1.1", ["1.2.840.10008.1.2"])],
            )
    finally:
        receiver.shutdown()
