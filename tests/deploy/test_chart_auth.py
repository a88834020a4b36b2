"""Authentication as the chart wires it: which pod gets which key, and that the keys work.

README "Security": the gateway verifies end users' bearer tokens, inventory the
administrators' (SetStock), both with the keys SHOP_AUTH_JWKS names; calls between the
services carry caller tokens signed with per-service keys from SHOP_INTERNAL_KEYS_DIR.
A pod holding more than its rules need could sign as another service (an internal key)
or mint any customer's or an administrator's token (the demo issuer's private key), so
every workload is checked to mount exactly its own set, for each source of end users'
keys: the chart's demo issuer, the user's JWKS URL, or the user's Secret.
"""

from __future__ import annotations

import base64
import copy
import re
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import helm_python
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from shop.cli.main import build_parser
from shop.credentials import TokenIssuer
from shop.runtime.auth.bearer import BearerSettings, BearerVerifier
from shop.runtime.auth.internal import MIN_KEY_BYTES
from shop.runtime.auth.principals import Unauthenticated

from ..support.chart import ChartRenderer, EnvOf, Rendered, merge, secret_files

MountVolumes = Callable[..., dict[str, Path]]

SERVICES = ("gateway", "orders", "inventory")
CREDENTIALS = "/credentials"
JWKS_URL = "https://idp.example.com/realms/shop/protocol/openid-connect/certs"
# One values set per source of end users' keys; the user's own provider comes with its
# own issuer and audience, and a Secret holding the load generator's bearer token.
SOURCES: dict[str, dict[str, Any]] = {
    "demo": {"loadgen": {"enabled": True}},
    "url": {
        "auth": {
            "jwksUrl": JWKS_URL,
            "issuer": "https://idp.example.com/realms/shop",
            "audience": "shop-api",
        },
        "loadgen": {"enabled": True, "tokenSecret": "loadgen-token"},
    },
    "secret": {
        "auth": {"existingSecret": "idp-keys", "existingSecretKey": "keys.pem"},
        "loadgen": {"enabled": True, "tokenSecret": "loadgen-token", "tokenSecretKey": "jwt"},
    },
}
# Secrets the user creates; the chart only names them.
USERS_SECRETS = {"idp-keys", "loadgen-token", "shop-callers"}


def _values(source: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return merge(SOURCES[source], extra or {})


def _pod_specs(rendered: Rendered) -> dict[str, dict[str, Any]]:
    """component -> pod spec, for every workload and the helm test pod."""
    specs = {}
    for kind in ("Deployment", "StatefulSet"):
        for workload in rendered.of_kind(kind):
            template = workload["spec"]["template"]
            specs[template["metadata"]["labels"]["app.kubernetes.io/component"]] = template["spec"]
    for pod in rendered.of_kind("Pod"):
        specs[pod["metadata"]["labels"]["app.kubernetes.io/component"]] = pod["spec"]
    return specs


def _mounted(spec: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Absolute path in the container -> (Secret, key), for every Secret-backed file."""
    volumes = {volume["name"]: volume for volume in spec.get("volumes", [])}
    files = {}
    for container in spec["containers"]:
        for mount in container.get("volumeMounts", []):
            # A StatefulSet's claim templates are no pod volume (and no Secret).
            for secret, key, path, _mode in secret_files(volumes.get(mount["name"], {})):
                files[f"{mount['mountPath']}/{path}"] = (secret, key)
    return files


def _expected(source: str, component: str) -> dict[str, tuple[str, str]]:
    """What each pod must mount, and nothing more (README: Security)."""
    internal = {"gateway": ["gateway"], "orders": ["gateway", "orders"]}
    internal["inventory"] = ["gateway", "orders"]  # its callers; it calls nobody itself
    files = {
        f"{CREDENTIALS}/internal/{name}": ("shop-internal-keys", name)
        for name in internal.get(component, [])
    }
    if component in ("gateway", "inventory"):  # they verify bearer tokens
        if source == "demo":
            files[f"{CREDENTIALS}/issuer.crt"] = ("shop-demo-issuer", "tls.crt")
        elif source == "secret":
            files[f"{CREDENTIALS}/auth-keys"] = ("idp-keys", "keys.pem")
    if component == "loadgen":
        token = SOURCES[source]["loadgen"]
        files = (
            {f"{CREDENTIALS}/issuer-key.pem": ("shop-demo-issuer", "tls.key")}
            if source == "demo"
            else {
                f"{CREDENTIALS}/token": (token["tokenSecret"], token.get("tokenSecretKey", "token"))
            }
        )
    return files


def _loadgen_args(rendered: Rendered) -> Any:
    """The load generator's `shop load` words, parsed by the real CLI parser."""
    spec = rendered.get("Deployment", "shop-loadgen")["spec"]["template"]["spec"]
    words = shlex.split(spec["containers"][0]["args"][0])
    return build_parser().parse_args(words[words.index("shop") + 1 : words.index("||")])


# --- who gets which key ----------------------------------------------------------------


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_each_pod_mounts_exactly_its_keys(
    mode: str, source: str, render_chart: ChartRenderer
) -> None:
    specs = _pod_specs(render_chart(mode, _values(source)))
    assert set(specs) == {*SERVICES, "loadgen", "postgresql", "test"}
    for component, spec in specs.items():
        assert _mounted(spec) == _expected(source, component), component
    # The properties the table above encodes, spelt out.
    for component in SERVICES:
        secrets = set(_mounted(specs[component]).values())
        assert ("shop-demo-issuer", "tls.key") not in secrets, component
    assert ("shop-internal-keys", "orders") not in set(_mounted(specs["gateway"]).values())
    loadgen = set(_mounted(specs["loadgen"]).values())
    assert not any(secret == "shop-internal-keys" for secret, _ in loadgen)


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_credentials_are_read_only_and_readable_by_the_service_user(
    source: str, render_chart: ChartRenderer
) -> None:
    specs = _pod_specs(render_chart("clusterip", _values(source)))
    for component in (*SERVICES, "loadgen"):
        spec = specs[component]
        (container,) = spec["containers"]
        mounts = [m for m in container["volumeMounts"] if m["mountPath"] == CREDENTIALS]
        assert mounts == [{"name": "credentials", "mountPath": CREDENTIALS, "readOnly": True}]
        (volume,) = [v for v in spec["volumes"] if v["name"] == "credentials"]
        # Owner root, group fsGroup: the service's uid reads through its group, others not.
        assert volume["projected"]["defaultMode"] == 0o440, component
        assert spec["securityContext"]["fsGroup"] == spec["securityContext"]["runAsGroup"]
        assert spec["securityContext"]["runAsUser"] == 10001
        assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_the_mount_point_exists_in_the_image(chart_dir: Path) -> None:
    # The root filesystem is read-only; the image makes /credentials (compose mounts its
    # keys there), so the runtime never has to create a directory in it.
    dockerfile = (chart_dir.parents[1] / "Dockerfile").read_text()
    assert re.search(rf"^RUN mkdir [^\n]*{CREDENTIALS}\b", dockerfile, re.MULTILINE)


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_the_environment_points_at_the_mounted_files(
    mode: str, source: str, render_chart: ChartRenderer, env_of: EnvOf
) -> None:
    values = _values(source)
    rendered = render_chart(mode, values)
    auth = merge({"issuer": "grpc-shop", "audience": "grpc-shop"}, values.get("auth", {}))
    for component in SERVICES:
        deployment = rendered.get("Deployment", f"shop-{component}")
        env = env_of(deployment)
        files = _mounted(deployment["spec"]["template"]["spec"])
        keys_dir = env["SHOP_INTERNAL_KEYS_DIR"]
        assert keys_dir == f"{CREDENTIALS}/internal"
        assert {p for p in files if p.startswith(keys_dir + "/")}, component
        assert env["SHOP_AUTH_ISSUER"] == auth["issuer"]
        assert env["SHOP_AUTH_AUDIENCE"] == auth["audience"]
        jwks = env["SHOP_AUTH_JWKS"]
        if component == "orders":
            assert jwks == ""  # it serves only the gateway: no key to verify tokens with
        elif source == "url":
            assert jwks == JWKS_URL
        else:
            assert jwks in files, (component, jwks)


@pytest.mark.parametrize("internal", ["generated", "existing"])
@pytest.mark.parametrize("source", sorted(SOURCES))
def test_every_secret_a_pod_names_exists(
    mode: str, source: str, internal: str, render_chart: ChartRenderer, env_of: EnvOf
) -> None:
    extra = {"internalKeys": {"existingSecret": "shop-callers"}} if internal == "existing" else {}
    rendered = render_chart(mode, _values(source, extra))
    data = {s["metadata"]["name"]: s.get("data", {}) for s in rendered.of_kind("Secret")}
    expected = {"shop-postgresql"}
    expected |= {"shop-demo-issuer"} if source == "demo" else set()
    expected |= {"shop-internal-keys"} if internal == "generated" else set()
    assert set(data) == expected
    referenced = set()
    for spec in _pod_specs(rendered).values():
        referenced |= set(_mounted(spec).values())
        for container in spec["containers"]:
            for entry in container.get("env", []):
                ref = entry.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    referenced.add((ref["name"], ref["key"]))
    for name, key in sorted(referenced):
        if name in USERS_SECRETS:
            continue
        assert name in data, f"no Secret {name} in the render"
        assert key in data[name], f"Secret {name} has no key {key!r}"
    if internal == "existing":
        names = {name for name, _ in referenced}
        assert "shop-callers" in names and "shop-internal-keys" not in names


def test_generated_internal_keys_are_long_random_and_per_caller(
    render_chart: ChartRenderer,
) -> None:
    secret = render_chart("clusterip").get("Secret", "shop-internal-keys")
    keys = {name: base64.b64decode(value) for name, value in secret["data"].items()}
    # Inventory calls nobody, so it signs nothing and has no key.
    assert set(keys) == {"gateway", "orders"}
    assert all(len(key) >= MIN_KEY_BYTES for key in keys.values())
    assert keys["gateway"] != keys["orders"]


def test_the_demo_issuer_is_a_certificate_and_its_rsa_key(render_chart: ChartRenderer) -> None:
    secret = render_chart("clusterip").get("Secret", "shop-demo-issuer")
    assert set(secret["data"]) == {"tls.crt", "tls.key"}
    certificate = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    public_key = certificate.public_key()
    assert isinstance(public_key, rsa.RSAPublicKey)
    assert public_key.key_size >= 2048
    # Neither the jwksUrl nor the existingSecret renders carry a demo issuer.
    for source in ("url", "secret"):
        assert "shop-demo-issuer" not in render_chart("clusterip", _values(source)).names("Secret")


# --- the keys work ---------------------------------------------------------------------


async def test_a_token_minted_by_the_load_generator_verifies_at_the_gateway(
    render_chart: ChartRenderer, env_of: EnvOf, mount_volumes: MountVolumes, tmp_path: Path
) -> None:
    """The demo issuer's genCA output is usable by both sides: the key the load
    generator mounts signs tokens that the certificate the gateway mounts verifies, with
    the service's own verifier and the issuer and audience each side is given."""
    rendered = render_chart("clusterip", {"loadgen": {"enabled": True}})
    gateway = rendered.get("Deployment", "shop-gateway")
    loadgen = rendered.get("Deployment", "shop-loadgen")
    gateway_files = mount_volumes(rendered, gateway, tmp_path / "gateway")[CREDENTIALS]
    loadgen_files = mount_volumes(rendered, loadgen, tmp_path / "loadgen")[CREDENTIALS]
    env = env_of(gateway)
    certificate = gateway_files / env["SHOP_AUTH_JWKS"].removeprefix(CREDENTIALS + "/")
    args = _loadgen_args(rendered)
    key = loadgen_files / str(args.token_key).removeprefix(CREDENTIALS + "/")

    issuer = TokenIssuer.from_file(key, args.issuer, args.audience)
    assert issuer.algorithm == "RS256"
    verifier = BearerVerifier(
        BearerSettings(str(certificate), env["SHOP_AUTH_ISSUER"], env["SHOP_AUTH_AUDIENCE"])
    )
    await verifier.load()
    user = await verifier.verify(issuer.token("alice"))
    assert user.subject == "alice" and not user.is_admin
    assert (await verifier.verify(issuer.token("ops", admin=True))).is_admin
    # The check above can fail: a token from another key does not verify.
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    stranger = TokenIssuer(other_key, args.issuer, args.audience)
    with pytest.raises(Unauthenticated, match="does not verify"):
        await verifier.verify(stranger.token("alice"))


async def test_a_token_of_another_key_type_is_unauthenticated(
    render_chart: ChartRenderer, mount_volumes: MountVolumes, tmp_path: Path, env_of: EnvOf
) -> None:
    rendered = render_chart("clusterip")
    gateway = rendered.get("Deployment", "shop-gateway")
    files = mount_volumes(rendered, gateway, tmp_path)[CREDENTIALS]
    certificate = files / env_of(gateway)["SHOP_AUTH_JWKS"].removeprefix(CREDENTIALS + "/")
    verifier = BearerVerifier(BearerSettings(str(certificate), "grpc-shop", "grpc-shop"))
    await verifier.load()
    stranger = TokenIssuer(ec.generate_private_key(ec.SECP256R1()))  # ES256
    with pytest.raises(Unauthenticated):
        await verifier.verify(stranger.token("alice"))


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_load_generator_authenticates_with_what_it_mounts(
    mode: str, source: str, render_chart: ChartRenderer
) -> None:
    rendered = render_chart(mode, _values(source))
    args = _loadgen_args(rendered)
    assert args.command == "load"
    mounted = _mounted(rendered.get("Deployment", "shop-loadgen")["spec"]["template"]["spec"])
    if source == "demo":
        assert mounted[str(args.token_key)] == ("shop-demo-issuer", "tls.key")
        assert (args.issuer, args.audience) == ("grpc-shop", "grpc-shop")
        assert args.token is None
    else:
        assert args.token_key is None
        # The shell reads the file before each run, so a rotated token is picked up.
        match = re.fullmatch(r"\$\(cat (\S+)\)", args.token)
        assert match, args.token
        assert match[1] in mounted


# --- values that cannot work -----------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        # Two identity providers: which one would verify?
        (
            {"auth": {"jwksUrl": JWKS_URL, "existingSecret": "idp-keys"}},
            "at '/auth/existingSecret': maxLength: got 8, want 0",
        ),
        # Keys fetched over plain HTTP could be swapped by anyone on the path.
        ({"auth": {"jwksUrl": "http://idp.example.com/certs"}}, "at '/auth/jwksUrl'"),
        ({"auth": {"jwksUrl": "idp.example.com/certs"}}, "at '/auth/jwksUrl'"),
        # The user's provider: the load generator cannot mint tokens, it needs one.
        (
            {"auth": {"jwksUrl": JWKS_URL}, "loadgen": {"enabled": True}},
            "at '/loadgen/tokenSecret': minLength: got 0, want 1",
        ),
        (
            {"auth": {"existingSecret": "idp-keys"}, "loadgen": {"enabled": True}},
            "at '/loadgen/tokenSecret': minLength: got 0, want 1",
        ),
        ({"auth": {"issuer": "my issuer"}}, "at '/auth/issuer'"),
        ({"auth": {"audience": ""}}, "at '/auth/audience'"),
        ({"auth": {"existingSecretKey": "keys/jwks"}}, "at '/auth/existingSecretKey'"),
        ({"auth": {"jwks": JWKS_URL}}, "at '/auth': additional properties 'jwks' not allowed"),
        (
            {"internalKeys": {"secret": "x"}},
            "at '/internalKeys': additional properties 'secret' not allowed",
        ),
        ({"streams": {"maxPerReplica": 0}}, "at '/streams/maxPerReplica': minimum"),
    ],
)
def test_the_schema_refuses_auth_values_that_cannot_work(
    values: dict[str, Any], message: str, render_chart: ChartRenderer
) -> None:
    with pytest.raises(helm_python.HelmValuesError, match=re.escape(message)):
        render_chart("clusterip", values)


def test_each_refused_part_is_fine_alone(render_chart: ChartRenderer) -> None:
    render_chart("clusterip", {"auth": {"jwksUrl": "https://idp.example.com:8443/certs"}})
    render_chart("clusterip", {"auth": {"existingSecret": "idp-keys"}})
    render_chart("clusterip", {"loadgen": {"enabled": True}})  # the demo issuer mints


# --- the rest of the chart around it ---------------------------------------------------


@pytest.mark.parametrize("source", ["url", "secret"])
def test_own_provider_renders_lint_clean_and_valid(
    mode: str,
    source: str,
    render_chart: ChartRenderer,
    lint: Callable[..., list[dict[str, Any]]],
    validate: Callable[[dict[str, Any]], None],
    chart_dir: Path,
    kube_versions: tuple[str, ...],
    all_features: dict[str, Any],
) -> None:
    # The demo issuer is the default, so test_chart_valid covers it in every mode.
    values = merge(merge(all_features, _values(source)), {"internalKeys": {}})
    if source == "secret":
        values["internalKeys"]["existingSecret"] = "shop-callers"
    for version in (kube_versions[0], kube_versions[-1]):
        assert lint(chart_dir, {"mode": mode, **copy.deepcopy(values)}, version) == []
    for obj in render_chart(mode, values).manifests():
        validate(obj)


def test_notes_say_how_to_get_a_token(render_chart: ChartRenderer) -> None:
    rendered = render_chart("clusterip")
    notes = rendered.notes
    fetch = (
        "kubectl -n shop-ns get secret shop-demo-issuer -o jsonpath='{.data.tls\\.key}'"
        " | base64 -d > issuer-key.pem"
    )
    assert fetch in notes
    assert "tls.key" in rendered.get("Secret", "shop-demo-issuer")["data"]
    assert "not for production" in notes
    # The commands NOTES gives parse with the real CLI, with the key just fetched.
    commands = [
        line.strip().removeprefix("TOKEN=$(").removesuffix(")")
        for line in notes.splitlines()
        if line.strip().startswith(("shop ", "TOKEN=$(shop "))
    ]
    assert len(commands) == 2
    for command in commands:
        args = build_parser().parse_args(shlex.split(command)[1:])
        assert args.command in ("token", "load"), command
        key = args.key if args.command == "token" else args.token_key
        assert str(key) == "issuer-key.pem", command
        assert (args.issuer, args.audience) == ("grpc-shop", "grpc-shop"), command
    assert "shop token alice --key issuer-key.pem" in notes
    assert 'grpcurl -plaintext -H "authorization: Bearer $TOKEN"' in notes
    own = render_chart("clusterip", _values("url")).notes
    assert "shop-demo-issuer" not in own
    assert JWKS_URL in own and "iss=https://idp.example.com/realms/shop, aud=shop-api" in own
