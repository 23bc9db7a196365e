"""py-consul passes `filter_expr` and `dc` through: a running mesh registry must filter as Consul
does and refuse datacenters it is not.

Run by tests/tests/consul_filter.rs with CONSUL_HTTP_ADDR=host:port. Exits non-zero on the first
failed expectation, printing what differed.
"""

import os

import consul

host, port = os.environ["CONSUL_HTTP_ADDR"].rsplit(":", 1)
c = consul.Consul(host=host, port=int(port))


def step(name):
    print(f"--- {name}", flush=True)


def fails(call, text):
    try:
        call()
    except consul.ConsulException as e:
        assert text in str(e), e
        return
    raise AssertionError(f"expected a failure with {text!r}")


step("two versions of web; only web-1 passes its check")
for sid, version, tags in [("web-1", "v1", ["v1", "canary"]), ("web-2", "v2", ["v2"])]:
    c.agent.service.register(
        "web", service_id=sid, address="127.0.0.1", port=8080, tags=tags,
        meta={"version": version}, check=consul.Check.ttl("30s"),
    )
c.agent.check.ttl_pass("service:web-1")

step("agent: AgentService and HealthCheck selectors")
assert list(c.agent.services(filter_expr="Meta.version == v1")) == ["web-1"]
assert list(c.agent.checks(filter_expr="Status == passing")) == ["service:web-1"]

step("catalog: catalog entry selectors")
_, nodes = c.catalog.service("web", filter_expr='ServiceMeta.version == "v2"')
assert [n["ServiceID"] for n in nodes] == ["web-2"], nodes
_, services = c.catalog.services(filter_expr="canary in ServiceTags")
assert services == {"web": ["canary", "v1"]}, services
_, nodes = c.catalog.nodes(filter_expr="Datacenter == dc1")
assert len(nodes) == 1, nodes

step("health: health entry selectors, crossing the list of checks")
_, nodes = c.health.service("web", filter_expr='Checks.Status == passing and "canary" in Service.Tags')
assert [n["Service"]["ID"] for n in nodes] == ["web-1"], nodes
_, checks = c.health.checks("web", filter_expr="Status == critical")
assert [x["CheckID"] for x in checks] == ["service:web-2"], checks

step("config: service-defaults lists filter")
c.config.set("service-defaults", "web", {"Protocol": "http"})
c.config.set("service-defaults", "db", {"Protocol": "tcp"})
entries = c.config.list("service-defaults", filter_expr="Protocol == http")
assert [e["Name"] for e in entries] == ["web"], entries

step("a bad expression: Consul's 500 with go-bexpr's message")
fails(
    lambda: c.health.service("web", filter_expr="Service.Meta.version == (v1"),
    "500 Failed to create boolean expression evaluator: 1:25 (24): no match found",
)
fails(
    lambda: c.catalog.service("web", filter_expr="Service.Meta.version == v1"),
    'Failed to create boolean expression evaluator: Selector "Service" is not valid',
)

step("dc: our own datacenter answers, another has no path")
_, nodes = consul.Consul(host=host, port=int(port), dc="dc1").health.service("web")
assert len(nodes) == 2, nodes
other = consul.Consul(host=host, port=int(port), dc="dc2")
fails(lambda: other.health.service("web"), "500 No path to datacenter")
fails(lambda: other.catalog.services(), "500 No path to datacenter")
fails(lambda: other.kv.get("anything"), "500 No path to datacenter")

print("all steps passed")
