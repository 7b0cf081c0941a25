"""The failure e-mail over TLS, and a failure e-mail that cannot be sent.

Real SMTP servers on loopback (aiosmtpd) with real certificates from a throwaway test CA
(trustme): STARTTLS and implicit TLS, with a login. The client trusts what the system trusts
plus $SSL_CERT_FILE, which the tests point at their CA. The run-failure sensor is evaluated
tick by tick on a real failed run, through Dagster's own cursor handling.
"""

import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from hector_sync.config import ConfigError, load_config
from hector_sync.definitions import build_definitions
from hector_sync.defs.jobs import C2_TO_HECTOR_JOB
from hector_sync.defs.resources import build_resources
from hector_sync.notify import EmailNotSent, send_email
from hector_sync.simulators.serve import RunningSimulators
from hector_sync_tests.conftest import Mailbox, WriteConfig, free_port
from hector_sync_tests.console import hector_sync

HOST = "127.0.0.1"
NOTIFY = "it-ops@example.org"  # the demo configuration's notify_on_error
LOGIN = "mailer"
PASSWORD = "smtp-pw-7d41c0"  # noqa: S105 - the test server's, in the environment only
PASSWORD_ENV = "HECTOR_SYNC_TEST_SMTP_PASSWORD"
DEAD = "http://127.0.0.1:9"  # nothing listens: these configurations never reach C2 or Hector
WRONG_KEY = "wrong-hector-key-0c9a77"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def trust(ca: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[trustme.CA], None]:
    """`trust(some_ca)`: the client now trusts that CA (and the system's), as an operator would
    with SSL_CERT_FILE. The test CA is trusted from the start."""

    def to(authority: trustme.CA) -> None:
        pem = tmp_path / f"ca-{id(authority)}.pem"
        authority.cert_pem.write_to_path(str(pem))
        monkeypatch.setenv("SSL_CERT_FILE", str(pem))

    to(ca)
    return to


@pytest.fixture
def password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)


@contextmanager
def smtp_server(cert: trustme.LeafCert, tls: str, *, port: int | None = None,
                logins: list[str] | None = None) -> Iterator[Mailbox]:
    """An SMTP server on loopback presenting `cert`: `tls` is "starttls" (required before
    anything else) or "implicit" (TLS from the first byte). With `logins` it requires a login
    as LOGIN/PASSWORD and records every login name it is given."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    box = Mailbox(port=port or free_port())
    options: dict[str, Any] = {}
    if logins is not None:

        def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
            assert isinstance(data, LoginPassword)
            logins.append(data.login.decode())
            return AuthResult(success=(data.login, data.password) == (LOGIN.encode(), PASSWORD.encode()))

        # implicit TLS is TLS from the start: aiosmtpd only knows STARTTLS as "TLS" for AUTH
        options = {"authenticator": authenticator, "auth_required": True,
                   "auth_require_tls": tls == "starttls"}
    if tls == "starttls":
        controller = Controller(box, hostname=HOST, port=box.port, tls_context=context,
                                require_starttls=True, **options)
    else:
        controller = Controller(box, hostname=HOST, port=box.port, ssl_context=context, **options)
    controller.start()
    try:
        yield box
    finally:
        controller.stop()


def smtp_config(write_config: WriteConfig, port: int, **smtp: object) -> Any:
    def edit(data: dict) -> None:
        data["smtp"].update({"host": HOST, "port": port, **smtp})

    return load_config(write_config(DEAD, DEAD, edit=edit))


def with_login(**smtp: object) -> dict[str, object]:
    return smtp | {"username": LOGIN, "password": {"env": PASSWORD_ENV}}


# --- TLS: certificates verified, logins never in clear ---------------------------------------


def test_starttls_to_a_trusted_certificate_delivers_with_the_login(
    ca: trustme.CA, trust: Callable[[trustme.CA], None], password: None, write_config: WriteConfig,
) -> None:
    logins: list[str] = []
    with smtp_server(ca.issue_cert(HOST), "starttls", logins=logins) as box:
        config = smtp_config(write_config, box.port, **with_login(starttls=True))
        send_email(config.smtp, NOTIFY, "hector-sync: test", "delivered over STARTTLS")
        (mail,) = box.wait_for(1)
        assert mail.rcpt_tos == [NOTIFY] and mail.body.strip() == "delivered over STARTTLS"
        assert logins == [LOGIN]

        # It was delivered because the certificate verifies against the trusted CA, not by luck:
        # trusting another CA instead, the same server is refused.
        trust(trustme.CA())
        with pytest.raises(EmailNotSent, match="certificate that does not verify"):
            send_email(config.smtp, NOTIFY, "hector-sync: test", "must not leave")
    assert len(box.messages) == 1 and logins == [LOGIN], "the login went to an unverified server"


@pytest.mark.parametrize(
    ("issued", "reason"),
    [
        (lambda trusted: trustme.CA().issue_cert(HOST), "unable to get local issuer certificate"),
        (lambda trusted: trusted.issue_cert("mail.elsewhere.example"), "mismatch"),
    ],
    ids=["unknown-ca", "other-host-name"],
)
def test_starttls_refuses_a_certificate_that_does_not_verify(
    ca: trustme.CA, trust: Callable[[trustme.CA], None], password: None, write_config: WriteConfig,
    issued: Callable[[trustme.CA], trustme.LeafCert], reason: str,
) -> None:
    logins: list[str] = []
    with smtp_server(issued(ca), "starttls", logins=logins) as box:
        config = smtp_config(write_config, box.port, **with_login(starttls=True))
        with pytest.raises(EmailNotSent) as refused:
            send_email(config.smtp, NOTIFY, "hector-sync: test", "must not leave")
    said = str(refused.value)
    assert said.startswith(f"the SMTP server {HOST}:{box.port} (STARTTLS) presented a certificate "
                           "that does not verify: "), said
    assert reason in said, said
    assert box.messages == [] and logins == [], "the login or the message went to an unverified server"


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")  # it is TLS from the start
def test_implicit_tls_delivers_with_the_login(
    ca: trustme.CA, trust: Callable[[trustme.CA], None], password: None, write_config: WriteConfig,
) -> None:
    logins: list[str] = []
    with smtp_server(ca.issue_cert(HOST), "implicit", logins=logins) as box:
        config = smtp_config(write_config, box.port, **with_login(tls="implicit"))
        send_email(config.smtp, NOTIFY, "hector-sync: test", "delivered over implicit TLS")
        (mail,) = box.wait_for(1)
    assert mail.body.strip() == "delivered over implicit TLS" and logins == [LOGIN]

    def without_port(data: dict) -> None:
        del data["smtp"]["port"]
        data["smtp"]["tls"] = "implicit"

    assert load_config(write_config(DEAD, DEAD, edit=without_port)).smtp.port == 465  # SMTPS's own port


@pytest.mark.parametrize(
    ("smtp", "field", "words"),
    [
        (with_login(), "username", "a login is never sent over plain text: add starttls: true, or tls: implicit"),
        (with_login(starttls=False), "username", "a login is never sent over plain text"),
        ({"starttls": True, "tls": "implicit"}, "tls", "starttls: true and tls: implicit exclude each other"),
    ],
    ids=["login-without-tls", "login-with-starttls-false", "starttls-and-implicit"],
)
def test_an_smtp_section_that_would_send_a_login_in_clear_is_refused_at_load(
    write_config: WriteConfig, password: None, smtp: dict, field: str, words: str,
) -> None:
    path = write_config(DEAD, DEAD, edit=lambda data: data["smtp"].update(smtp))
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    said = str(refused.value)
    assert said.startswith(f"{path}: section 'smtp', field '{field}': {words}"), said
    assert "\n" not in said and PASSWORD not in said


# --- A failure e-mail that cannot be sent is not lost ----------------------------------------


def fail_printers(path: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch) -> dg.ExecuteInProcessResult:
    """A real failed run of printers in `instance`: Hector rejects the API key."""
    monkeypatch.setenv("HECTOR_SYNC_DEMO_HECTOR_API_KEY", WRONG_KEY)
    job = build_definitions(str(path)).resolve_job_def(C2_TO_HECTOR_JOB)
    result = job.execute_in_process(partition_key="printers", instance=instance, raise_on_error=False)
    assert not result.success
    return result


def test_the_failure_sensor_retries_an_unsent_email_on_its_next_tick(
    simulators: RunningSimulators, write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = free_port()  # the relay is down: nothing listens here yet

    def down_relay(data: dict) -> None:
        data["smtp"]["port"] = port

    path = write_config(simulators.c2_url, simulators.hector_url, edit=down_relay)
    sensor = build_definitions(str(path)).resolve_sensor_def("email_on_sync_failure")
    resources = {"smtp": build_resources(str(path))["smtp"]}

    def tick(instance: dg.DagsterInstance, cursor: str | None) -> tuple[str | None, str | None]:
        """One evaluation as the sensor daemon does it: (the cursor it keeps, the tick's error)."""
        with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources) as context:
            try:
                data = sensor.evaluate_tick(context)
            except Exception as failed:  # the tick fails and the daemon keeps the cursor it had
                return cursor, str(failed)
        errors = [r.error.message for r in data.dagster_run_reactions or [] if r.error]
        # a run reaction's error fails the tick too, but the daemon moves the cursor on
        return data.cursor, (errors[0] if errors else None)

    with dg.DagsterInstance.get() as instance:
        # Tick 0 comes before the run: it only sets the cursor, as the daemon's first tick does.
        cursor, error = tick(instance, None)
        assert cursor is not None and error is None
        run_id = fail_printers(path, instance, monkeypatch).run_id

        cursor, error = tick(instance, cursor)
        assert error is not None, "a failure e-mail that could not be sent passed for sent"
        assert f"the failure e-mail for run {run_id} to {NOTIFY} could not be sent: " in error, error
        assert f"the SMTP server {HOST}:{port} cannot be reached: Connection refused" in error, error
        assert "next tick tries again" in error, error
        assert instance.get_run_by_id(run_id).tags["hector_sync/failure_email"].startswith("not sent")

        box = Mailbox(port=port)
        relay = Controller(box, hostname=HOST, port=port)
        relay.start()
        try:
            after, error = tick(instance, cursor)
            assert error is None, error
            (mail,) = box.wait_for(1)
            assert run_id in mail.body and "printers" in mail.message["Subject"]
            assert instance.get_run_by_id(run_id).tags["hector_sync/failure_email"] == "sent"

            _, error = tick(instance, after)
            assert error is None, error
            # a tick retried from the old cursor (a daemon restarted mid-tick) does not send it twice
            _, error = tick(instance, cursor)
            assert error is None, error
        finally:
            relay.stop()
    assert len(box.messages) == 1, [m.message["Subject"] for m in box.messages]


def test_cli_sync_says_the_failure_email_was_not_sent_and_to_whom(
    simulators: RunningSimulators, write_config: WriteConfig, ca: trustme.CA,
    trust: Callable[[trustme.CA], None], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A relay whose certificate does not verify gets nothing; the operator reads why."""
    with smtp_server(trustme.CA().issue_cert(HOST), "starttls") as box:

        def unverifiable_relay(data: dict) -> None:
            data["smtp"].update({"host": HOST, "port": box.port, "starttls": True})

        path = write_config(simulators.c2_url, simulators.hector_url, edit=unverifiable_relay)
        monkeypatch.setenv("HECTOR_SYNC_DEMO_HECTOR_API_KEY", WRONG_KEY)
        done = hector_sync("--config", str(path), "sync", "--category", "printers")

    assert done.returncode == 1, done.stdout + done.stderr[-3000:]
    assert (f"the failure e-mail to {NOTIFY} could not be sent: the SMTP server {HOST}:{box.port} "
            "(STARTTLS) presented a certificate that does not verify: unable to get local issuer "
            "certificate") in done.stdout, done.stdout
    assert box.messages == []


# --- The link to the run ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dagster_url", "ui", "link"),
    [
        ("https://dagster.acme.example/", "https://dagster.acme.example",
         "The run in the Dagster UI: https://dagster.acme.example/runs/{run_id}"),
        (None, "served by `dagster dev` or `hector-sync demo --ui` on the sync's machine; "
         "dagster_url in the configuration links it here", None),
    ],
    ids=["dagster_url", "no-dagster_url"],
)
def test_the_failure_email_links_the_run_in_the_configured_dagster_ui(
    simulators: RunningSimulators, write_config: WriteConfig, mailbox: Mailbox,
    monkeypatch: pytest.MonkeyPatch, dagster_url: str | None, ui: str, link: str | None,
) -> None:
    def set_url(data: dict) -> None:
        if dagster_url:
            data["dagster_url"] = dagster_url

    path = write_config(simulators.c2_url, simulators.hector_url, edit=set_url)
    with dg.DagsterInstance.get() as instance:
        result = fail_printers(path, instance, monkeypatch)
        sensor = build_definitions(str(path)).resolve_sensor_def("email_on_sync_failure")
        with dg.build_run_status_sensor_context(
            sensor_name=sensor.name, dagster_instance=instance, dagster_run=result.dagster_run,
            dagster_event=result.get_run_failure_event(),
            resources={"smtp": build_resources(str(path))["smtp"]},
        ).for_run_failure() as context:
            sensor(context)
    (mail,) = mailbox.wait_for(1)
    body = "\n".join(mail.body.splitlines())  # as sent: CRLF line ends
    assert f"or in the Dagster UI ({ui}):\n  Runs > {result.run_id} > Re-execute" in body, body
    assert "127.0.0.1:3000" not in body, body
    if link:
        assert link.format(run_id=result.run_id) in body.splitlines(), body
    else:
        assert "/runs/" not in body, body


@pytest.mark.parametrize("url", ["ftp://dagster.acme.example", "dagster.acme.example", "https://admin:pw@dagster.acme.example"])
def test_a_dagster_url_that_is_not_an_http_address_is_refused_at_load(write_config: WriteConfig, url: str) -> None:
    path = write_config(DEAD, DEAD, edit=lambda data: data.update(dagster_url=url))
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    said = str(refused.value)
    assert said.startswith(f"{path}: section 'dagster_url': "), said
    assert "pw" not in said.split(": ", 1)[1], said
