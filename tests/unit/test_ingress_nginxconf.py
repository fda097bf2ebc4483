"""nginx.conf rendering (kubewire.ingress.nginxconf) and the annotations (kubewire.ingress.annotations):
the exact text of locations, TLS and redirects, timeouts, protocols, rewrites, and a whole rendered file
that real nginx accepts (`nginx -t`)."""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path

import pytest
from test_ingress_routing import NGINX_CLASS, eps, ing, p, rule, svc

from kubewire.ingress import annotations as ann
from kubewire.ingress.model import build
from kubewire.ingress.nginxconf import Paths, cert_files, render
from kubewire.northsouth.pki import CA, tls_secret

PATHS = Paths("/run/kubewire/c/ingress-nginx/pod-a", "/run/kubewire/c/ingress-nginx/pod-a/ssl")
A = "nginx.ingress.kubernetes.io/"


def block(conf: str, head: str) -> str:
    start = conf.index(head)
    return conf[start:conf.index("\n        }\n", start) + 11]


def conf_for(*ingresses: dict, secrets: tuple[dict, ...] = (), slices: tuple[dict, ...] | None = None) -> str:
    services = [svc("web"), svc("idle"), svc("grpc")]
    sl = list(slices) if slices is not None else [eps("web", ["10.244.1.5", "10.244.0.9"]), eps("grpc", ["10.244.2.3"])]
    return render(build(list(ingresses), [NGINX_CLASS], services, sl, list(secrets)), PATHS, "pod-a")


SEED = ing("dynamic-api-gateway", [rule("api.codesprintpro.com", p("/v1/payments", "Prefix", "web"))], ns="default",
           annotations={A + "backend-protocol": "HTTP", A + "proxy-connect-timeout": "5", A + "proxy-read-timeout": "15"},
           ingressClassName="nginx")


def test_prefix_location_exact_text() -> None:
    conf = conf_for(SEED)
    assert block(conf, "        location = /v1/payments {") == """\
        location = /v1/payments {  # default/dynamic-api-gateway: Prefix /v1/payments
            set $namespace      "default";
            set $ingress_name   "dynamic-api-gateway";
            set $service_name   "web";
            set $service_port   "8080";
            set $location_path  "/v1/payments";
            set $proxy_upstream_name "default-web-8080";
            proxy_set_header Host                   $best_http_host;
            proxy_set_header Upgrade                $http_upgrade;
            proxy_set_header Connection             $connection_upgrade;
            proxy_set_header X-Request-ID           $req_id;
            proxy_set_header X-Real-IP              $remote_addr;
            proxy_set_header X-Forwarded-For        $remote_addr;
            proxy_set_header X-Forwarded-Host       $best_http_host;
            proxy_set_header X-Forwarded-Port       $pass_port;
            proxy_set_header X-Forwarded-Proto      $pass_access_scheme;
            proxy_set_header X-Forwarded-Scheme     $pass_access_scheme;
            proxy_set_header X-Scheme               $pass_access_scheme;
            proxy_set_header X-Original-Forwarded-For $http_x_forwarded_for;
            proxy_set_header Proxy                  "";
            proxy_connect_timeout 5s;
            proxy_send_timeout 60s;
            proxy_read_timeout 15s;
            proxy_buffering off;
            proxy_buffer_size 4k;
            proxy_buffers 4 4k;
            proxy_request_buffering on;
            proxy_http_version 1.1;
            proxy_cookie_domain off;
            proxy_cookie_path off;
            proxy_redirect off;
            proxy_next_upstream error timeout;
            proxy_next_upstream_timeout 0;
            proxy_next_upstream_tries 3;
            proxy_pass http://default-web-8080;
        }
"""
    assert "        location ^~ /v1/payments/ {  # default/dynamic-api-gateway: Prefix /v1/payments\n" in conf
    assert """\
    upstream default-web-8080 {
        server 10.244.0.9:8080 max_fails=0;
        server 10.244.1.5:8080 max_fails=0;
        keepalive 320;
        keepalive_timeout 60s;
        keepalive_requests 10000;
    }
""" in conf


def test_server_blocks_listen_on_80_and_443_with_the_default_certificate() -> None:
    conf = conf_for(SEED)
    s = conf[conf.index("    ## start server api.codesprintpro.com"):]
    assert s.startswith("""\
    ## start server api.codesprintpro.com
    server {
        server_name api.codesprintpro.com;
        listen 80;
        listen 443 ssl http2;
        ssl_certificate     /run/kubewire/c/ingress-nginx/pod-a/ssl/default-fake-certificate.pem;
        ssl_certificate_key /run/kubewire/c/ingress-nginx/pod-a/ssl/default-fake-certificate.pem;
""")
    catch_all = conf[conf.index("    ## start server _"):conf.index("    ## end server _")]
    assert "listen 80 default_server backlog=4096;" in catch_all
    assert "listen 443 default_server backlog=4096 ssl http2;" in catch_all
    assert "location / {  # fallback: default backend (404)" in catch_all and "return 404;" in catch_all
    assert "if ($redirect_to_https)" not in conf  # no TLS section, no redirect


def test_wildcard_host_is_one_label() -> None:
    conf = conf_for(ing("w", [rule("*.foo.com", p("/", "Prefix", "web"))]))
    assert '        server_name "~^[^.]+\\.foo\\.com$";\n' in conf


def test_tls_host_redirects_with_308_unless_ssl_redirect_is_off(tmp_path: Path) -> None:
    ca = CA.load_or_create(str(tmp_path), "unit")
    secret = tls_secret("default", "s", ca.issue(["secure.test"]), ["secure.test"])
    tls = [{"hosts": ["secure.test"], "secretName": "s"}]
    conf = conf_for(ing("t", [rule("secure.test", p("/", "Prefix", "web"))], tls=tls), secrets=(secret,))
    loc = block(conf, "        location / {  # default/t")
    assert "            if ($redirect_to_https) {\n                return 308 https://$host$request_uri;\n            }\n" in loc
    assert "ssl_certificate     /run/kubewire/c/ingress-nginx/pod-a/ssl/default-s.pem;" in conf
    off = conf_for(ing("t", [rule("secure.test", p("/", "Prefix", "web"))], tls=tls,
                       annotations={A + "ssl-redirect": "false"}), secrets=(secret,))
    assert "redirect_to_https) {" not in block(off, "        location / {  # default/t")
    forced = conf_for(ing("t", [rule("plain.test", p("/", "Prefix", "web"))], annotations={A + "force-ssl-redirect": "true"}))
    assert "return 308 https://$host$request_uri;" in block(forced, "        location / {  # default/t")


def test_a_secret_that_does_not_cover_the_host_falls_back_to_the_default_certificate(tmp_path: Path) -> None:
    ca = CA.load_or_create(str(tmp_path), "unit")
    wrong = tls_secret("default", "s", ca.issue(["other.test"]), ["other.test"])
    tls = [{"hosts": ["secure.test"], "secretName": "s"}]
    cfg = build([ing("t", [rule("secure.test", p("/", "Prefix", "web"))], tls=tls)], [NGINX_CLASS], [svc("web")], [], [wrong])
    assert cfg.servers[1].cert == "default-fake-certificate" and cfg.servers[1].tls
    assert any("does not cover host secure.test" in m for m in cfg.problems)
    broken = {**wrong, "data": {"tls.crt": base64.b64encode(b"junk").decode(), "tls.key": wrong["data"]["tls.key"]}}
    cfg = build([ing("t", [rule("secure.test", p("/", "Prefix", "web"))], tls=tls)], [NGINX_CLASS], [svc("web")], [], [broken])
    assert cfg.servers[1].cert == "default-fake-certificate"


def test_no_endpoints_503_and_unknown_backend_404() -> None:
    conf = conf_for(ing("t", [rule("h", p("/idle", "Exact", "idle"))]))
    assert block(conf, "        location = /idle {").endswith("            # no ready endpoints\n            return 503;\n        }\n")
    assert "upstream default-idle-8080" not in conf


@pytest.mark.parametrize(("proto", "directive"), [("HTTPS", "proxy_pass https://default-web-8080;"),
                                                  ("GRPC", "grpc_pass grpc://default-web-8080;"),
                                                  ("GRPCS", "grpc_pass grpcs://default-web-8080;"),
                                                  ("bogus", "proxy_pass http://default-web-8080;")])
def test_backend_protocol(proto: str, directive: str) -> None:
    conf = conf_for(ing("t", [rule("h", p("/", "Prefix", "web"))], annotations={A + "backend-protocol": proto,
                                                                                A + "proxy-read-timeout": "7"}))
    loc = block(conf, "        location / {  # default/t")
    assert directive in loc
    if proto.startswith("GRPC"):
        assert "grpc_set_header X-Real-IP              $remote_addr;" in loc and "grpc_read_timeout 7s;" in loc
        assert "proxy_set_header" not in loc and "proxy_pass" not in loc


def test_rewrite_target() -> None:
    conf = conf_for(ing("r", [rule("h", p("/something(/|$)(.*)", "ImplementationSpecific", "web"))],
                        annotations={A + "rewrite-target": "/$2"}),
                    ing("q", [rule("h", p("/v2", "Prefix", "web"))], annotations={A + "rewrite-target": "/api"}))
    assert 'location ~ "^/something(/|$)(.*)" {' in conf
    assert '            rewrite "^/something(/|$)(.*)" /$2 break;\n' in conf
    assert '            set $location_path  "/something(/|${literal_dollar})(.*)";\n' in conf
    v2 = block(conf, "        location ^~ /v2/ {")
    assert '            rewrite "^/v2/(.*)$" /api/$1 break;\n            rewrite "^/v2$" /api break;\n' in v2


def test_annotations_parse_like_ingress_nginx() -> None:
    a = ann.parse({A + "proxy-connect-timeout": "5", A + "proxy-read-timeout": "15", A + "proxy-send-timeout": "x",
                   A + "ssl-redirect": "False", A + "force-ssl-redirect": "1", A + "backend-protocol": "grpcs",
                   A + "rewrite-target": "/$1$host", "other.io/x": "y"})
    assert (a.connect_timeout, a.read_timeout, a.send_timeout) == (5, 15, 60)
    assert (a.ssl_redirect, a.force_ssl_redirect, a.backend_protocol) == (False, True, "GRPCS")
    assert a.rewrite_target == "" and len(a.problems) == 2  # a variable in the target is refused
    assert ann.parse(None) == ann.Annotations()


def test_rendering_is_deterministic_and_tracks_endpoints() -> None:
    one = conf_for(SEED)
    assert one == conf_for(SEED)
    three = conf_for(SEED, slices=(eps("web", ["10.244.1.5", "10.244.0.9", "10.244.2.4"]),))
    assert one != three and "server 10.244.2.4:8080 max_fails=0;" in three


@pytest.mark.skipif(shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists(), reason="nginx not installed")
def test_real_nginx_accepts_the_rendered_file(tmp_path: Path) -> None:
    ca = CA.load_or_create(str(tmp_path / "pki"), "unit")
    secret = tls_secret("default", "s", ca.issue(["secure.test"]), ["secure.test"])
    ingresses = [SEED,
                 ing("t", [rule("secure.test", p("/", "Prefix", "web"), p("/idle", "Exact", "idle"))],
                     tls=[{"hosts": ["secure.test"], "secretName": "s"}]),
                 ing("g", [rule("*.grpc.test", p("/", "Prefix", "grpc"))], annotations={A + "backend-protocol": "GRPC"}),
                 ing("r", [rule("h", p("/something(/|$)(.*)", "ImplementationSpecific", "web"))],
                     annotations={A + "rewrite-target": "/$2"}),
                 ing("d", [], defaultBackend={"service": {"name": "web", "port": {"number": 8080}}})]
    cfg = build(ingresses, [NGINX_CLASS], [svc("web"), svc("idle"), svc("grpc")],
                [eps("web", ["10.244.1.5"]), eps("grpc", ["10.244.2.3"])], [secret])
    paths = Paths(str(tmp_path), str(tmp_path / "ssl"))
    (tmp_path / "ssl").mkdir()
    (tmp_path / "tmp").mkdir()
    issued = ca.issue(["default.test"])
    for name, pem in cert_files(cfg, issued.cert_pem.decode() + issued.key_pem.decode()).items():
        Path(paths.cert(name)).write_text(pem)
    conf = tmp_path / "nginx.conf"
    conf.write_text(render(cfg, paths, "unit"))
    r = subprocess.run(["/usr/sbin/nginx", "-t", "-q", "-c", str(conf)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
