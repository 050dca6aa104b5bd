"""``mpc-consortium`` end to end in a temporary folder, and the config loaders on what it writes."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID

from site_agent.cli.consortium import main
from site_agent.config import Address, load_agent, load_consortium
from site_agent.crypto.certs import fingerprint
from site_agent.crypto.signing import load_private_key
from site_agent.errors import AuthError, ConfigError
from site_agent.policy import load_policy


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, (out + err).strip()


@pytest.fixture
def consortium(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    d = tmp_path / "c"
    assert _run(capsys, "init", str(d), "--name", "Lung Study", "--id", "lung-1")[0] == 0
    for site, addr in (("site-a", "127.0.0.1:7001"), ("site-b", "hosp-b.example:7002"), ("site-c", "[::1]:7003")):
        assert _run(capsys, "add-site", str(d), site, "--address", addr, "--compute")[0] == 0
    assert _run(capsys, "add-site", str(d), "site-d", "--address", "10.0.0.4:7004")[0] == 0
    assert _run(capsys, "add-analyst", str(d), "alice")[0] == 0
    return d


def test_round_trip(consortium: Path) -> None:
    cfg = load_consortium(consortium / "consortium.toml")
    assert (cfg.id, cfg.name) == ("lung-1", "Lung Study")
    assert cfg.require_committee() == ("site-a", "site-b", "site-c")
    assert list(cfg.sites) == ["site-a", "site-b", "site-c", "site-d"]
    assert cfg.sites["site-d"].compute is False
    assert cfg.sites["site-c"].address == Address("::1", 7003)
    ca = x509.load_pem_x509_certificate(cfg.ca_cert.read_bytes())
    for name in ("site-a", "site-b", "site-c", "site-d"):
        agent = load_agent(consortium / "sites" / name / "agent.toml")
        assert agent.site == name and agent.query_timeout == 30 and not agent.tables
        assert agent.consortium == cfg.path
        assert agent.audit_log == consortium / "sites" / name / "audit" / "audit.jsonl"
        cert_pem = agent.tls_cert.read_bytes()
        assert fingerprint(cert_pem) == cfg.sites[name].tls_fingerprint
        cert = x509.load_pem_x509_certificate(cert_pem)
        cert.verify_directly_issued_by(ca)
        eku = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
        assert eku == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
        # The registered public key belongs to the site's private signing key.
        key = load_private_key(agent.signing_key)
        cfg.sites[name].public_key().verify(key.sign(b"m"), b"m")
        for secret in (agent.tls_key, agent.signing_key):
            assert stat.S_IMODE(secret.stat().st_mode) == 0o600
        policy = load_policy(agent.policy, agent.site)
        assert policy.min_cell_size == 5 and policy.analysts == frozenset()
    san = x509.load_pem_x509_certificate((consortium / "sites/site-b/tls/cert.pem").read_bytes()).extensions
    assert san.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName) == [
        "hosp-b.example"
    ]
    alice = consortium / "analysts" / "alice"
    key = load_private_key(alice / "signing" / "key.pem")
    cfg.analyst_key("alice").verify(key.sign(b"q"), b"q")
    assert fingerprint((alice / "tls" / "cert.pem").read_bytes()) == cfg.analysts["alice"].tls_fingerprint
    assert stat.S_IMODE((consortium / "ca" / "ca.key").stat().st_mode) == 0o600
    with pytest.raises(AuthError, match="not registered"):
        cfg.analyst_key("mallory")


def test_tables_and_moved_folder(consortium: Path, tmp_path: Path) -> None:
    site = consortium / "sites" / "site-a"
    (site / "data" / "lung.csv").write_text("age\n1\n")
    (site / "data" / "v.parquet").write_bytes(b"")
    text = (site / "agent.toml").read_text()
    (site / "agent.toml").write_text(
        text + '\n[tables.lung]\npath = "data/lung.csv"\n[tables.v]\npath = "data/v.parquet"\n'
    )
    moved = tmp_path / "moved"
    consortium.rename(moved)
    agent = load_agent(moved / "sites" / "site-a" / "agent.toml")
    assert agent.tables["lung"].path == moved / "sites" / "site-a" / "data" / "lung.csv"
    assert (agent.tables["lung"].format, agent.tables["v"].format) == ("csv", "parquet")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["init", "{d}", "--name", "X"], "already exists and is not empty"),
        (["add-site", "{d}", "site-e", "--address", "h:1", "--compute"], "already has 3 compute members"),
        (["add-site", "{d}", "site-a", "--address", "h:1"], "sites/site-a already exists"),
        (["add-site", "{d}", "alice", "--address", "h:1"], "named 'alice' already exists"),
        (["add-site", "{d}", "bad name", "--address", "h:1"], "must be letters, digits"),
        (["add-site", "{d}", "s", "--address", "nohost"], "is not HOST:PORT"),
        (["add-site", "{d}/nowhere", "s", "--address", "h:1"], "run 'mpc-consortium init"),
        (["add-analyst", "{d}", "alice"], "analysts/alice already exists"),
    ],
)
def test_errors_are_one_line(
    consortium: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    before = (consortium / "consortium.toml").read_text()
    code, out = _run(capsys, *(a.format(d=consortium) for a in argv))
    assert code == 1
    assert out.startswith("mpc-consortium: error: ") and "\n" not in out
    assert message in out
    assert (consortium / "consortium.toml").read_text() == before
    assert not (consortium / "sites" / "site-e").exists()


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('address = "127.0.0.1:7001"', 'address = "127.0.0.1"', "sites.site-a.address: '127.0.0.1' is not HOST:PORT"),
        ("compute = false", "compute = true", "consortium.committee: site 'site-d' has compute = true"),
        ('committee = ["site-a", ', 'committee = ["site-x", ', "consortium.committee: 'site-x' is not a site"),
        ("tls_fingerprint = ", "tls_fingerprint = 'AB' #", "sites.site-a.tls_fingerprint: must be a SHA-256"),
        ('name = "Lung Study"', 'name = "Lung Study"\nnmae = "x"', "consortium.nmae: unknown key"),
        ("MCowBQYDK2Vw", "MCowBQYDK2Vx", "sites.site-a.signing_key"),
    ],
)
def test_consortium_file_errors_name_key(consortium: Path, old: str, new: str, message: str) -> None:
    path = consortium / "consortium.toml"
    _edit(path, old, new)
    with pytest.raises(ConfigError) as info:
        load_consortium(path)
    assert str(info.value).startswith(str(path.resolve()))
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("query_timeout_seconds = 30", "query_timeout_seconds = 0", "site.query_timeout_seconds: must be at least 1"),
        ('key = "signing/key.pem"', 'key = "signing/nope.pem"', "signing.key: file not found"),
        ('# [tables.lung]\n# path = "data/lung.csv"', '[tables.lung]\npath = "data/none.csv"', "tables.lung.path"),
        ('# [tables.lung]\n# path = "data/lung.csv"', '[tables.lung]\npath = "agent.toml"', "cannot tell the format"),
        ("[audit]", "[audits]", "audits: unknown key"),
    ],
)
def test_agent_file_errors_name_key(consortium: Path, old: str, new: str, message: str) -> None:
    path = consortium / "sites" / "site-a" / "agent.toml"
    _edit(path, old, new)
    with pytest.raises(ConfigError) as info:
        load_agent(path)
    assert str(info.value).startswith(str(path.resolve()))
    assert message in str(info.value)


def test_committee_incomplete_until_three(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "c"
    _run(capsys, "init", str(d), "--name", "Two")
    _run(capsys, "add-site", str(d), "a", "--address", "a:1", "--compute")
    cfg = load_consortium(d / "consortium.toml")
    assert cfg.id.startswith("two-") and len(cfg.id) == len("two-") + 8
    with pytest.raises(ConfigError, match="needs 3 compute members, has 1"):
        cfg.require_committee()


def test_signing_key_files_are_ed25519(consortium: Path) -> None:
    key = load_private_key(consortium / "analysts" / "alice" / "signing" / "key.pem")
    assert isinstance(key, Ed25519PrivateKey)
    with pytest.raises(ConfigError, match="not an Ed25519"):
        load_private_key(consortium / "analysts" / "alice" / "tls" / "key.pem")


# --- a neutral compute member without data --------------------------------------------------


@pytest.fixture
def two_hospitals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    d = tmp_path / "c2"
    assert _run(capsys, "init", str(d), "--name", "Two hospitals", "--id", "two-1")[0] == 0
    assert _run(capsys, "add-site", str(d), "east", "--address", "east:7001", "--compute")[0] == 0
    code, out = _run(capsys, "add-site", str(d), "neutral", "--address", "neutral:7002", "--compute", "--no-data")
    assert code == 0 and "neutral compute member, no data" in out
    assert _run(capsys, "add-site", str(d), "west", "--address", "west:7003", "--compute")[0] == 0
    return d


def test_no_data_site_round_trip(two_hospitals: Path) -> None:
    path = two_hospitals / "consortium.toml"
    cfg = load_consortium(path)
    assert cfg.require_committee() == ("east", "neutral", "west")
    assert [cfg.sites[s].data for s in ("east", "neutral", "west")] == [True, False, True]
    assert cfg.data_sites == ("east", "west")
    # Only the data-less site gets the key: files of consortia without one are unchanged.
    assert path.read_text().count("data = false") == 1 and "data = true" not in path.read_text()
    agent_text = (two_hospitals / "sites" / "neutral" / "agent.toml").read_text()
    assert "holds no data" in agent_text and "declares no tables" in agent_text and "\n[tables" not in agent_text
    assert not load_agent(two_hospitals / "sites" / "neutral" / "agent.toml").tables
    policy_path = two_hospitals / "sites" / "neutral" / "policy.toml"
    assert "\n[tables" not in policy_path.read_text()
    assert load_policy(policy_path, "neutral", data=False).tables is None
    assert load_policy(two_hospitals / "sites" / "east" / "policy.toml", "east").tables == {}


def test_no_data_needs_compute(two_hospitals: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = (two_hospitals / "consortium.toml").read_text()
    code, out = _run(capsys, "add-site", str(two_hospitals), "other", "--address", "o:1", "--no-data")
    assert code == 1 and "--no-data needs --compute" in out and "\n" not in out
    assert (two_hospitals / "consortium.toml").read_text() == before
    assert not (two_hospitals / "sites" / "other").exists()


def test_consortium_file_without_data_key_means_data(consortium: Path) -> None:
    cfg = load_consortium(consortium / "consortium.toml")
    assert "data =" not in (consortium / "consortium.toml").read_text()
    assert all(s.data for s in cfg.sites.values())
    # The committee's members, then the input-only sites (site-d has no --compute).
    assert cfg.input_sites == ("site-d",)
    assert cfg.data_sites == (*cfg.require_committee(), "site-d")


def test_a_site_without_data_must_compute(two_hospitals: Path) -> None:
    path = two_hospitals / "consortium.toml"
    text = path.read_text()
    _edit(path, 'committee = ["east", "neutral", "west"]', 'committee = ["east", "west"]')
    _edit(path, "compute = true\ndata = false", "compute = false\ndata = false")
    with pytest.raises(ConfigError) as info:
        load_consortium(path)
    assert "sites.neutral.data: a site without data is only useful as a compute member" in str(info.value)
    path.write_text(text.replace("data = false", 'data = "no"'))
    with pytest.raises(ConfigError, match=r"sites\.neutral\.data"):
        load_consortium(path)


def test_policy_of_a_site_without_data_has_no_table_rules(two_hospitals: Path) -> None:
    path = two_hospitals / "sites" / "neutral" / "policy.toml"
    path.write_text(path.read_text() + '\n[tables.lung]\ncolumns = "*"\n')
    with pytest.raises(ConfigError) as info:
        load_policy(path, "neutral", data=False)
    assert "tables: site 'neutral' holds no data" in str(info.value)
    assert set(load_policy(path, "neutral").tables or ()) == {"lung"}


def test_add_site_help_explains_no_data(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["add-site", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--no-data" in out and "neutral compute member that holds no data" in out and "only ever sees shares" in out
