"""`kubewire get services,endpointslices`: the columns kubectl prints (its printers.go:
getServiceExternalIP, makePortString, formatEndpointSlicePorts, formatDiscoveryEndpoints)."""

from __future__ import annotations

from kubewire.cli.printers import table


def svc(name: str, type_: str = "ClusterIP", cluster_ip: str = "10.96.0.5", status_ips: tuple[str, ...] = (),
        **spec: object) -> dict:
    out = {"kind": "Service", "metadata": {"name": name, "namespace": "shop"},
           "spec": {"type": type_, "clusterIP": cluster_ip, "ports": [{"port": 80, "protocol": "TCP"}], **spec}}
    if status_ips:
        out["status"] = {"loadBalancer": {"ingress": [{"ip": ip} for ip in status_ips]}}
    return out


SERVICES = [
    svc("plain"),
    svc("with-external", externalIPs=["198.51.100.7"]),
    svc("headless", cluster_ip="None"),
    svc("np", "NodePort", ports=[{"port": 80, "nodePort": 30080, "protocol": "TCP"},
                                 {"port": 53, "nodePort": 30053, "protocol": "UDP"}]),
    svc("lb-pending", "LoadBalancer", ports=[{"port": 443, "nodePort": 31443, "protocol": "TCP"}]),
    svc("lb", "LoadBalancer", status_ips=("203.0.113.20",), externalIPs=["198.51.100.8"]),
    svc("lb-many", "LoadBalancer", status_ips=("203.0.113.30", "203.0.113.4")),
    svc("ext", "ExternalName", cluster_ip="", externalName="db.example.com", ports=[]),
]


def test_services_as_kubectl_prints_them() -> None:
    assert table("Service", SERVICES) == "\n".join([
        "NAME            TYPE           CLUSTER-IP   EXTERNAL-IP                 PORT(S)                     AGE",
        "plain           ClusterIP      10.96.0.5    <none>                      80/TCP                      <unknown>",
        "with-external   ClusterIP      10.96.0.5    198.51.100.7                80/TCP                      <unknown>",
        "headless        ClusterIP      None         <none>                      80/TCP                      <unknown>",
        "np              NodePort       10.96.0.5    <none>                      80:30080/TCP,53:30053/UDP   <unknown>",
        "lb-pending      LoadBalancer   10.96.0.5    <pending>                   443:31443/TCP               <unknown>",
        "lb              LoadBalancer   10.96.0.5    203.0.113.20,198.51.100.8   80/TCP                      <unknown>",
        "lb-many         LoadBalancer   10.96.0.5    203.0.113.30,...            80/TCP                      <unknown>",
        "ext             ExternalName   <none>       db.example.com              <none>                      <unknown>",
    ])


def test_service_external_ip_column() -> None:
    def external(obj: dict, wide: bool = False) -> str:
        lines = table("Service", [obj], wide=wide).splitlines()
        start = lines[0].index("EXTERNAL-IP")
        return lines[1][start:].split()[0]

    assert [external(o) for o in SERVICES] == [
        "<none>", "198.51.100.7", "<none>", "<none>", "<pending>",
        "203.0.113.20,198.51.100.8",  # kubectl: the load balancer's first, then externalIPs
        "203.0.113.30,...",  # sorted, cut to 16 characters
        "db.example.com",
    ]
    assert external(SERVICES[6], wide=True) == "203.0.113.30,203.0.113.4"


def test_endpoint_slices_as_kubectl_prints_them() -> None:
    def slice_(name: str, ports: list[dict], addresses: list[str]) -> dict:
        return {"kind": "EndpointSlice", "metadata": {"name": name, "namespace": "shop"}, "addressType": "IPv4",
                "ports": ports, "endpoints": [{"addresses": [a]} for a in addresses]}

    objs = [
        slice_("web-abc", [{"name": "http", "port": 8080}], ["10.244.1.5", "10.244.2.5"]),
        slice_("many-def", [{"port": p} for p in (1, 2, 3, 4, 5)], [f"10.244.1.{i}" for i in range(1, 6)]),
        slice_("odd-ghi", [{"name": "named"}, {}], []),
        slice_("none-jkl", [], []),
    ]
    assert table("EndpointSlice", objs) == "\n".join([
        "NAME       ADDRESSTYPE   PORTS               ENDPOINTS                                      AGE",
        "web-abc    IPv4          8080                10.244.1.5,10.244.2.5                          <unknown>",
        "many-def   IPv4          1,2,3 + 2 more...   10.244.1.1,10.244.1.2,10.244.1.3 + 2 more...   <unknown>",
        "odd-ghi    IPv4          named,*             <unset>                                        <unknown>",
        "none-jkl   IPv4          <unset>             <unset>                                        <unknown>",
    ])
