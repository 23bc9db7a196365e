"""Black-box compatibility: the real py-consul client against a running mesh registry.

Run by tests/tests/consul_compat.rs with CONSUL_HTTP_ADDR=host:port. Exits non-zero on the first
failed expectation, printing what differed.
"""

import os
import threading
import time

import consul
import consul.exceptions

host, port = os.environ["CONSUL_HTTP_ADDR"].rsplit(":", 1)
c = consul.Consul(host=host, port=int(port), token="ignored-token")


def step(name):
    print(f"--- {name}", flush=True)


step("agent self and leader")
assert c.agent.self()["Config"]["Datacenter"] == "dc1"
assert c.status.leader().endswith(":8300")

step("register a service with a TTL check; it starts critical")
c.agent.service.register(
    "web", service_id="web-1", address="127.0.0.1", port=8080, tags=["v1"],
    check=consul.Check.ttl("30s"),
)
checks = c.agent.checks()
assert checks["service:web-1"]["Status"] == "critical", checks
index, nodes = c.health.service("web", passing=True)
assert nodes == [], nodes

step("pass the TTL check; the instance is now passing")
c.agent.check.ttl_pass("service:web-1", notes="all good")
index, nodes = c.health.service("web", passing=True)
assert [n["Service"]["ID"] for n in nodes] == ["web-1"], nodes
assert nodes[0]["Service"]["Tags"] == ["v1"]
assert nodes[0]["Checks"][0]["Output"] == "all good"
assert nodes[0]["Node"]["Datacenter"] == "dc1"
assert int(index) >= 1

step("unknown check: the error text clients match on")
try:
    c.agent.check.ttl_pass("no-such-check")
    raise AssertionError("ttl_pass on an unknown check must fail")
except consul.ConsulException as e:
    assert 'CheckID "no-such-check" does not have associated TTL' in str(e), e

step("a blocking read ends promptly when another instance registers")
result = {}


def watch():
    started = time.monotonic()
    result["index"], result["nodes"] = c.health.service("web", index=index, wait="30s")
    result["elapsed"] = time.monotonic() - started


t = threading.Thread(target=watch)
t.start()
time.sleep(0.5)
assert t.is_alive(), "the blocking query returned before anything changed"
registered_at = time.monotonic()
c.agent.service.register("web", service_id="web-2", port=8081, check=consul.Check.ttl("30s"))
t.join(timeout=10)
assert not t.is_alive(), "the blocking query did not wake up"
woke_after = time.monotonic() - registered_at
print(f"woke {woke_after * 1000:.1f} ms after the registration")
assert woke_after < 2.0, woke_after
assert int(result["index"]) > int(index)
assert sorted(n["Service"]["ID"] for n in result["nodes"]) == ["web-1", "web-2"]

step("health checks by service, by state, by node")
index, checks = c.health.checks("web")
assert sorted(ch["CheckID"] for ch in checks) == ["service:web-1", "service:web-2"], checks
index, critical = c.health.state("critical")
assert [ch["CheckID"] for ch in critical] == ["service:web-2"], critical
index, on_node = c.health.node("mesh")
assert len(on_node) == 2, on_node

step("blocking with an unchanged index times out at the wait")
idx2, _ = c.health.service("web")
started = time.monotonic()
idx3, _ = c.health.service("web", index=idx2, wait="1s")
elapsed = time.monotonic() - started
assert 0.9 <= elapsed < 1.5, elapsed
assert idx3 == idx2

step("catalog")
index, services = c.catalog.services()
assert services["web"] == ["v1"], services
index, instances = c.catalog.service("web")
assert sorted(i["ServiceID"] for i in instances) == ["web-1", "web-2"]

step("catalog register and deregister on another node")
assert c.catalog.register(
    "node-b", "10.1.2.3",
    service={"Service": "db", "ID": "db-1", "Port": 5432, "Tags": ["primary"]},
    check={"CheckID": "db-alive", "Name": "db alive", "Status": "passing", "ServiceID": "db-1"},
)
index, entries = c.health.service("db", passing=True)
assert [(e["Node"]["Node"], e["Node"]["Address"], e["Service"]["ID"]) for e in entries] == [
    ("node-b", "10.1.2.3", "db-1")], entries
index, nodes = c.catalog.nodes()
assert sorted(n["Node"] for n in nodes) == ["mesh", "node-b"], nodes
assert c.catalog.deregister("node-b", check_id="db-alive")
index, entries = c.health.service("db")
assert entries[0]["Checks"] == [], entries
assert c.catalog.deregister("node-b")
assert c.health.service("db")[1] == []

step("KV put with cas, recursive get, keys, delete")
assert c.kv.put("app/config/a", "1")
assert c.kv.put("app/config/b", "2", flags=42)
assert not c.kv.put("app/config/a", "x", cas=0), "cas=0 is create-only"
index, item = c.kv.get("app/config/a")
assert item["Value"] == b"1"
assert not c.kv.put("app/config/a", "x", cas=item["ModifyIndex"] + 1000)
assert c.kv.put("app/config/a", "3", cas=item["ModifyIndex"])
index, items = c.kv.get("app/", recurse=True)
assert [(i["Key"], i["Value"]) for i in items] == [("app/config/a", b"3"), ("app/config/b", b"2")]
assert items[1]["Flags"] == 42
index, keys = c.kv.get("app/", keys=True, separator="/")
assert keys == ["app/config/"], keys
index, missing = c.kv.get("app/nothing")
assert missing is None and int(index) >= 1
assert c.kv.delete("app/config/a")
index, items = c.kv.get("app/", recurse=True)
assert [i["Key"] for i in items] == ["app/config/b"]
assert c.kv.delete("app/", recurse=True)
assert c.kv.get("app/", recurse=True)[1] is None

step("config entries: set, get, list, invalid, delete")
assert c.config.set("service-defaults", "web", {"Protocol": "http"})
try:
    c.config.set("service-splitter", "web", {"Splits": [{"Weight": 100, "ServiceSubset": "v1"}]})
    raise AssertionError("a split to an undefined subset must be rejected")
except consul.exceptions.BadRequest as e:
    assert "v1" in str(e), e
assert c.config.set("service-resolver", "web", {
    "DefaultSubset": "v1",
    "Subsets": {"v1": {"Filter": "Service.Meta.version == v1"}, "v2": {"Filter": "Service.Meta.version == v2"}},
})
assert c.config.set("service-splitter", "web", {
    "Splits": [{"Weight": 90, "ServiceSubset": "v1"}, {"Weight": 10, "ServiceSubset": "v2"}],
})
entry = c.config.get("service-splitter", "web")
assert [s["Weight"] for s in entry["Splits"]] == [90, 10], entry
assert entry["Kind"] == "service-splitter" and entry["ModifyIndex"] >= 1
names = sorted(e["Name"] for e in c.config.list("service-defaults"))
assert names == ["web"], names
try:
    c.config.set("service-splitter", "web", {"Splits": [{"Weight": 90, "ServiceSubset": "v1"}, {"Weight": 5, "ServiceSubset": "v2"}]})
    raise AssertionError("a split that does not sum to 100 must be rejected")
except consul.exceptions.BadRequest as e:
    assert "Weight" in str(e), e
assert [s["Weight"] for s in c.config.get("service-splitter", "web")["Splits"]] == [90, 10]
assert c.config.delete("service-splitter", "web")
assert c.config.get("service-splitter", "web") is None
entry = c.config.get("service-resolver", "web")
assert c.config.delete("service-resolver", "web", cas=entry["ModifyIndex"] + 1) is False
assert c.config.delete("service-resolver", "web", cas=entry["ModifyIndex"]) is True
assert c.config.get("service-resolver", "web") is None

step("deregister")
c.agent.service.deregister("web-1")
c.agent.service.deregister("web-2")
index, nodes = c.health.service("web")
assert nodes == [], nodes
assert "service:web-1" not in c.agent.checks()

print("py-consul compatibility: all steps passed", flush=True)
