"""nginx.conf for one ingress-nginx controller pod, rendered from the model (kubewire.ingress.model).

Laid out as ingress-nginx's template (rootfs/etc/nginx/template/nginx.tmpl): the same maps
($best_http_host, $pass_access_scheme, $redirect_to_https, $req_id ...), proxy headers, timeouts,
`proxy_next_upstream error timeout` with 3 tries, the `upstreaminfo` access log format (plus upstream
connect and header times), a catch-all server `_`, and the health port 10254. Upstreams are plain
nginx upstream blocks of pod endpoints (ingress-nginx balances the same endpoints in Lua), round robin,
with keep-alive connections to the pods and no passive failure marking (`max_fails=0`, as the Lua
balancer). Every server listens on 80 and on 443 with TLS (HTTP/2); a host without a certificate of its
own is served the default certificate.

Status codes as ingress-nginx gives them: no route 404, a backend without ready endpoints 503,
connection refused 502, upstream timeouts 504, HTTP to a TLS host 308.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from kubewire.ingress.annotations import Annotations
from kubewire.ingress.model import CATCH_ALL, DEFAULT_CERT, Backend, Config, Location, Route, Server

HEALTH_PORT = 10254
STATUS_PORT = 10246
LOG_FORMAT = ('$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" '
              '"$http_user_agent" $request_length $request_time [$proxy_upstream_name] '
              '[$proxy_alternative_upstream_name] $upstream_addr $upstream_response_length $upstream_response_time '
              '$upstream_status $req_id $upstream_connect_time $upstream_header_time')
SSL_CIPHERS = ("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
               "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
               "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384")


@dataclass(frozen=True)
class Paths:
    """Where this pod's files live (all absolute)."""

    dir: str  # per-pod directory: nginx.pid, temp directories
    ssl_dir: str  # <cert name>.pem files (certificate chain + key)

    def cert(self, name: str) -> str:
        return f"{self.ssl_dir}/{name}.pem"


def _literal(text: str) -> str:
    """A value for `set` with no variables in it: a `$` is written as ingress-nginx's
    ${literal_dollar} (a geo variable, which is never interpolated)."""
    return text.replace("$", "${literal_dollar}")


def _regex_quote(text: str) -> str:
    return re.sub(r"([\\.^$|?*+()\[\]{}])", r"\\\1", text)


def _proxy_block(route: Route | None, backend: Backend | None, a: Annotations, server: Server, ind: str) -> list[str]:
    out: list[str] = []
    ing = route.ingress if route else None
    out += [f'set $namespace      "{ing[0] if ing else ""}";',
            f'set $ingress_name   "{ing[1] if ing else ""}";',
            f'set $service_name   "{backend.service if backend else ""}";',
            f'set $service_port   "{backend.port if backend else ""}";',
            f'set $location_path  "{_literal(route.path) if route else "/"}";',
            f'set $proxy_upstream_name "{backend.upstream if backend else "upstream-default-backend"}";']
    if a.force_ssl_redirect or (server.tls and a.ssl_redirect):
        out += ["if ($redirect_to_https) {", "    return 308 https://$host$request_uri;", "}"]
    if backend is None:
        out.append("return 404;")
        return [ind + line for line in out]
    if not backend.endpoints:
        out.append(f"# {backend.why_empty}")
        out.append("return 503;")
        return [ind + line for line in out]
    grpc = a.backend_protocol in ("GRPC", "GRPCS")
    d = "grpc" if grpc else "proxy"
    hdr = "grpc_set_header" if grpc else "proxy_set_header"
    out += [f"{hdr} Host                   $best_http_host;",
            f"{hdr} Upgrade                $http_upgrade;",
            f"{hdr} Connection             $connection_upgrade;",
            f"{hdr} X-Request-ID           $req_id;",
            f"{hdr} X-Real-IP              $remote_addr;",
            f"{hdr} X-Forwarded-For        $remote_addr;",
            f"{hdr} X-Forwarded-Host       $best_http_host;",
            f"{hdr} X-Forwarded-Port       $pass_port;",
            f"{hdr} X-Forwarded-Proto      $pass_access_scheme;",
            f"{hdr} X-Forwarded-Scheme     $pass_access_scheme;",
            f"{hdr} X-Scheme               $pass_access_scheme;",
            f"{hdr} X-Original-Forwarded-For $http_x_forwarded_for;",
            f'{hdr} Proxy                  "";',
            f"{d}_connect_timeout {a.connect_timeout}s;",
            f"{d}_send_timeout {a.send_timeout}s;",
            f"{d}_read_timeout {a.read_timeout}s;"]
    if not grpc:
        out += ["proxy_buffering off;", "proxy_buffer_size 4k;", "proxy_buffers 4 4k;",
                "proxy_request_buffering on;", "proxy_http_version 1.1;", "proxy_cookie_domain off;",
                "proxy_cookie_path off;", "proxy_redirect off;"]
    out += [f"{d}_next_upstream error timeout;", f"{d}_next_upstream_timeout 0;", f"{d}_next_upstream_tries 3;"]
    if route is not None and a.rewrite_target:
        out += _rewrite(route, a.rewrite_target)
    scheme = {"HTTP": "http", "HTTPS": "https", "GRPC": "grpc", "GRPCS": "grpcs"}[a.backend_protocol]
    out.append(f"{'grpc_pass' if grpc else 'proxy_pass'} {scheme}://{backend.upstream};")
    return [ind + line for line in out]


def _rewrite(route: Route, target: str) -> list[str]:
    """rewrite-target: a regex path's own captures ($1..) as ingress-nginx; for Exact and Prefix
    paths the matched prefix is replaced, element-wise (/app/x -> <target>/x, /app -> <target>)."""
    if route.regex:
        return [f'rewrite "^{route.path}" {target} break;']
    if route.path_type == "Exact":
        return [f'rewrite "^{_regex_quote(route.path)}$" {target} break;']
    base = route.path.rstrip("/") if route.path_type == "Prefix" else route.path
    if route.path_type != "Prefix":
        return [f'rewrite "^{_regex_quote(base)}(.*)$" {target.rstrip("/")}$1 break;']
    lines = [f'rewrite "^{_regex_quote(base)}/(.*)$" {target.rstrip("/")}/$1 break;']
    if base:
        lines.append(f'rewrite "^{_regex_quote(base)}$" {target} break;')
    return lines


def _location(loc: Location, server: Server) -> list[str]:
    route = loc.route
    backend = route.backend if route else server.fallback
    a = route.annotations if route else server.fallback_annotations
    head = f"location {loc.match} {{"
    if route is None:
        head = f"location {loc.match} {{  # fallback: " + (
            f"defaultBackend of ingress {server.fallback_ingress[0]}/{server.fallback_ingress[1]}"
            if server.fallback_ingress else "default backend (404)")
    else:
        head += f"  # {route.ingress[0]}/{route.ingress[1]}: {route.path_type} {route.path}"
    return ["        " + head, *_proxy_block(route, backend, a, server, "            "), "        }", ""]


def _server(s: Server, paths: Paths) -> list[str]:
    default = s.host == CATCH_ALL
    out = [f"    ## start server {s.host}", "    server {"]
    if default:
        name = "_"
    elif s.is_wildcard:  # one label exactly (Ingress API), not nginx's "any number of labels"
        name = f'"~^[^.]+{_regex_quote(s.host[1:])}$"'
    else:
        name = s.host
    out.append(f"        server_name {name};")
    if default:
        out += ["        listen 80 default_server backlog=4096;",
                "        listen 443 default_server backlog=4096 ssl http2;"]
    else:
        out += ["        listen 80;", "        listen 443 ssl http2;"]
    cert = paths.cert(s.cert)
    out += [f"        ssl_certificate     {cert};", f"        ssl_certificate_key {cert};",
            '        set $proxy_alternative_upstream_name "";', ""]
    for loc in s.locations:
        out += _location(loc, s)
    out += ["    }", f"    ## end server {s.host}", ""]
    return out


def _upstream(b: Backend) -> list[str]:
    return [f"    upstream {b.upstream} {{",
            *(f"        server {ep} max_fails=0;" for ep in b.endpoints),
            "        keepalive 320;", "        keepalive_timeout 60s;", "        keepalive_requests 10000;",
            "    }", ""]


def render(cfg: Config, paths: Paths, pod: str = "") -> str:
    """The whole nginx.conf text. Deterministic: the same model always renders the same bytes."""
    body: list[str] = []
    for b in cfg.upstreams.values():
        if b.endpoints:
            body += _upstream(b)
    for s in cfg.servers:
        body += _server(s, paths)
    certs = "".join(f"{n}:{c.serial};" for n, c in sorted(cfg.certs.items()))
    checksum = hashlib.sha256(("\n".join(body) + certs).encode()).hexdigest()[:16]
    t = paths.dir
    head = f"""# nginx.conf of ingress-nginx controller pod {pod or "?"} - rendered by kubewire, do not edit
# Configuration checksum: {checksum}
pid {t}/nginx.pid;
worker_processes auto;
worker_shutdown_timeout 240s;
error_log /dev/stderr notice;

events {{
    multi_accept on;
    worker_connections 16384;
    use epoll;
}}

http {{
    client_body_temp_path {t}/tmp/client-body;
    proxy_temp_path       {t}/tmp/proxy-temp;
    fastcgi_temp_path     {t}/tmp/fastcgi-temp;
    uwsgi_temp_path       {t}/tmp/uwsgi-temp;
    scgi_temp_path        {t}/tmp/scgi-temp;

    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    log_subrequest on;
    reset_timedout_connection on;
    keepalive_timeout 75s;
    keepalive_requests 1000;

    client_header_buffer_size 1k;
    client_header_timeout 60s;
    large_client_header_buffers 4 8k;
    client_body_buffer_size 8k;
    client_body_timeout 60s;
    client_max_body_size 1m;

    types_hash_max_size 2048;
    server_names_hash_max_size 1024;
    server_names_hash_bucket_size 128;
    map_hash_bucket_size 64;
    proxy_headers_hash_max_size 512;
    proxy_headers_hash_bucket_size 64;
    variables_hash_bucket_size 256;
    variables_hash_max_size 2048;
    underscores_in_headers off;
    ignore_invalid_headers on;

    include /etc/nginx/mime.types;
    default_type text/html;
    server_tokens off;
    uninitialized_variable_warn off;

    log_format upstreaminfo '{LOG_FORMAT}';
    access_log /dev/stdout upstreaminfo;
    error_log /dev/stderr notice;

    map $http_upgrade $connection_upgrade {{
        default upgrade;
        '' '';
    }}
    map '' $pass_access_scheme {{
        default $scheme;
    }}
    map '' $pass_server_port {{
        default $server_port;
    }}
    map $http_host $best_http_host {{
        default $http_host;
        '' $host;
    }}
    map "$scheme:$pass_access_scheme" $redirect_to_https {{
        default 0;
        "http:http" 1;
        "https:http" 1;
    }}
    map $pass_server_port $pass_port {{
        443 443;
        default $pass_server_port;
    }}
    geo $literal_dollar {{
        default "$";
    }}
    map $http_x_request_id $req_id {{
        default $http_x_request_id;
        "" $request_id;
    }}

    server_name_in_redirect off;
    port_in_redirect off;

    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:SSL:10m;
    ssl_session_timeout 10m;
    ssl_session_tickets off;
    ssl_buffer_size 4k;
    ssl_ciphers '{SSL_CIPHERS}';
    ssl_prefer_server_ciphers on;
    ssl_ecdh_curve auto;
    proxy_ssl_session_reuse on;

"""
    tail = f"""    # health checks and status, as the controller's port {HEALTH_PORT}
    server {{
        listen {HEALTH_PORT} default_server;
        listen 127.0.0.1:{STATUS_PORT};
        set $proxy_upstream_name "internal";
        access_log off;
        location = /healthz {{
            return 200;
        }}
        location = /nginx_status {{
            allow 127.0.0.1;
            deny all;
            stub_status on;
        }}
        location / {{
            return 404;
        }}
    }}
}}
"""
    return head + "\n".join(body) + "\n" + tail


def cert_files(cfg: Config, default_pem: str) -> dict[str, str]:
    """The certificate files this configuration needs: name -> PEM (chain + key)."""
    out = {DEFAULT_CERT: default_pem}
    out.update({n: c.pem for n, c in cfg.certs.items()})
    return out
