// Black-box compatibility: the real npm `consul` client (2.0.1, pinned in package.json) against
// a running mesh registry.
//
// Run by tests/tests/consul_npm.rs with CONSUL_HTTP_ADDR=host:port. Exits non-zero on the first
// failed expectation, printing what differed.
"use strict";

const assert = require("node:assert/strict");
const Consul = require("consul");

const [host, port] = process.env.CONSUL_HTTP_ADDR.split(":");
const consul = new Consul({ host, port: Number(port), defaults: { token: "ignored-token" } });

function step(name) {
  console.log(`--- ${name}`);
}

/** The error of a call that must fail, with its HTTP status and body text. */
async function failure(promise) {
  try {
    await promise;
  } catch (err) {
    const res = err.response || {};
    return { status: res.statusCode, body: String(res.body ?? "").trim(), err };
  }
  throw new assert.AssertionError({ message: "the call succeeded but must fail" });
}

function ids(entries) {
  return entries.map((e) => e.Service.ID).sort();
}

/** Resolves with the first `change` event of `watch` whose data satisfies `wanted`. */
function nextChange(watch, wanted) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("the watch saw no matching change")), 10000);
    const onChange = (data, res) => {
      if (wanted(data)) {
        clearTimeout(timer);
        watch.removeListener("change", onChange);
        resolve({ data, index: BigInt(res.headers["x-consul-index"]) });
      }
    };
    watch.on("change", onChange);
    watch.on("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

async function main() {
  step("agent self, members, leader, peers, datacenters");
  const self = await consul.agent.self();
  assert.equal(self.Config.Datacenter, "dc1");
  const members = await consul.agent.members();
  assert.equal(members.length, 1);
  assert.equal(members[0].Tags.role, "consul");
  assert.match(await consul.status.leader(), /:8300$/);
  assert.deepEqual(await consul.status.peers(), [await consul.status.leader()]);
  assert.deepEqual(await consul.catalog.datacenters(), ["dc1"]);

  step("register a service with a TTL check; it starts critical");
  await consul.agent.service.register({
    name: "web",
    id: "web-1",
    address: "127.0.0.1",
    port: 8080,
    tags: ["v1"],
    meta: { version: "1" },
    check: { checkid: "web-1-ttl", ttl: "30s" },
  });
  let checks = await consul.agent.checks();
  assert.equal(checks["web-1-ttl"].Status, "critical");
  assert.deepEqual(await consul.health.service({ service: "web", passing: true }), []);

  step("pass the TTL check; health.service with passing finds the instance");
  await consul.agent.check.pass({ id: "web-1-ttl", note: "all good" });
  let entries = await consul.health.service({ service: "web", passing: true });
  assert.deepEqual(ids(entries), ["web-1"]);
  assert.deepEqual(entries[0].Service.Tags, ["v1"]);
  assert.equal(entries[0].Checks[0].Output, "all good");
  assert.equal(entries[0].Node.Datacenter, "dc1");
  const unknownTtl = await failure(consul.agent.check.pass("no-such-check"));
  assert.equal(unknownTtl.status, 500);
  assert.equal(unknownTtl.body, 'CheckID "no-such-check" does not have associated TTL');

  step("a standalone check on the service: register, warn, list by state, deregister");
  await consul.agent.check.register({ name: "disk", id: "web-1-disk", serviceid: "web-1", ttl: "30s" });
  await consul.agent.check.warn({ id: "web-1-disk", note: "80% full" });
  const warning = await consul.health.state("warning");
  assert.deepEqual(warning.map((c) => c.CheckID), ["web-1-disk"]);
  assert.deepEqual((await consul.health.checks("web")).map((c) => c.CheckID).sort(), [
    "web-1-disk",
    "web-1-ttl",
  ]);
  assert.deepEqual(await consul.health.service({ service: "web", passing: true }), []);
  await consul.agent.check.deregister("web-1-disk");
  assert.deepEqual(ids(await consul.health.service({ service: "web", passing: true })), ["web-1"]);
  const unknownCheck = await failure(consul.agent.check.deregister("web-1-disk"));
  assert.equal(unknownCheck.status, 404);

  step("a service with a sidecar; the catalog's service, node and connect views");
  await consul.agent.service.register({
    name: "web",
    id: "web-2",
    port: 8081,
    tags: ["v2"],
    check: { checkid: "web-2-ttl", ttl: "30s", status: "passing" },
    connect: { sidecarService: { port: 21000 } },
  });
  const services = await consul.catalog.service.list();
  assert.deepEqual(services.web, ["v1", "v2"]);
  assert.deepEqual(services["web-sidecar-proxy"], ["v2"]);
  const nodes = await consul.catalog.service.nodes("web");
  assert.deepEqual(nodes.map((n) => n.ServiceID).sort(), ["web-1", "web-2"]);
  assert.equal(nodes[0].Node, "mesh");
  const node = await consul.catalog.node.services("mesh");
  assert.equal(node.Node.Node, "mesh");
  assert.deepEqual(Object.keys(node.Services).sort(), ["web-1", "web-2", "web-2-sidecar-proxy"]);
  const connect = await consul.catalog.connect.nodes("web");
  assert.deepEqual(connect.map((c) => c.ServiceID), ["web-2-sidecar-proxy"]);
  assert.equal(connect[0].ServiceKind, "connect-proxy");
  assert.equal(connect[0].ServiceProxy.DestinationServiceID, "web-2");
  assert.equal(connect[0].ServicePort, 21000);

  step("catalog register and deregister on another node");
  await consul.catalog.register({
    node: "node-b",
    address: "10.1.2.3",
    service: { service: "db", id: "db-1", port: 5432, tags: ["primary"] },
    check: { checkid: "db-alive", name: "db alive", status: "passing", serviceid: "db-1" },
  });
  const db = await consul.health.service({ service: "db", passing: true });
  assert.deepEqual(db.map((e) => [e.Node.Node, e.Node.Address, e.Service.ID]), [
    ["node-b", "10.1.2.3", "db-1"],
  ]);
  assert.deepEqual((await consul.catalog.node.list()).map((n) => n.Node).sort(), ["mesh", "node-b"]);
  assert.deepEqual((await consul.health.node("node-b")).map((c) => c.CheckID), ["db-alive"]);
  await consul.catalog.deregister({ node: "node-b" });
  assert.deepEqual(await consul.health.service("db"), []);
  // Consul answers `null` for an unknown node; the client hands that on as nothing.
  assert.equal((await consul.catalog.node.services("node-b")) ?? null, null);

  step("KV set with cas and flags, get, recurse, keys, delete");
  assert.equal(await consul.kv.set("app/config/a", "1"), true);
  assert.equal(await consul.kv.set({ key: "app/config/b", value: "2", flags: 42 }), true);
  // A failed cas answers JSON `false`, which this client hands on as nothing.
  assert.ok(!(await consul.kv.set({ key: "app/config/a", value: "x", cas: 0 })));
  const a = await consul.kv.get("app/config/a");
  assert.equal(a.Value, "1");
  assert.ok(!(await consul.kv.set({ key: "app/config/a", value: "x", cas: a.ModifyIndex + 1000 })));
  assert.equal(await consul.kv.set({ key: "app/config/a", value: "3", cas: a.ModifyIndex }), true);
  const all = await consul.kv.get({ key: "app/", recurse: true });
  assert.deepEqual(all.map((i) => [i.Key, i.Value, i.Flags]), [
    ["app/config/a", "3", 0],
    ["app/config/b", "2", 42],
  ]);
  assert.deepEqual(await consul.kv.keys({ key: "app/", separator: "/" }), ["app/config/"]);
  assert.equal(await consul.kv.get("app/nothing"), undefined);
  assert.equal(await consul.kv.del("app/config/a"), true);
  assert.deepEqual((await consul.kv.get({ key: "app/", recurse: true })).map((i) => i.Key), [
    "app/config/b",
  ]);
  assert.equal(await consul.kv.del({ key: "app/", recurse: true }), true);
  assert.equal(await consul.kv.get({ key: "app/", recurse: true }), undefined);

  step("a watch on health.service sees an instance join and leave");
  const watch = consul.watch({
    method: consul.health.service,
    options: { service: "web", passing: true, wait: "30s" },
  });
  try {
    const first = await nextChange(watch, (data) => data.length === 2);
    assert.deepEqual(ids(first.data), ["web-1", "web-2"]);
    const joined = nextChange(watch, (data) => data.length === 3);
    await consul.agent.service.register({
      name: "web",
      id: "web-3",
      port: 8082,
      check: { checkid: "web-3-ttl", ttl: "30s", status: "passing" },
    });
    const second = await joined;
    assert.deepEqual(ids(second.data), ["web-1", "web-2", "web-3"]);
    assert.ok(second.index > first.index, `${second.index} > ${first.index}`);
    const left = nextChange(watch, (data) => data.length === 2);
    await consul.agent.service.deregister("web-3");
    assert.deepEqual(ids((await left).data), ["web-1", "web-2"]);
  } finally {
    watch.end();
  }

  step("service maintenance takes the instance out of passing results, then back");
  await consul.agent.service.maintenance({ id: "web-1", enable: true, reason: "upgrading" });
  checks = await consul.agent.checks();
  const maint = checks["_service_maintenance:web-1"];
  assert.equal(maint.Status, "critical");
  assert.equal(maint.Name, "Service Maintenance Mode");
  assert.equal(maint.Notes, "upgrading");
  assert.deepEqual(ids(await consul.health.service({ service: "web", passing: true })), ["web-2"]);
  await consul.agent.service.maintenance({ id: "web-1", enable: false });
  assert.deepEqual(ids(await consul.health.service({ service: "web", passing: true })), [
    "web-1",
    "web-2",
  ]);
  const unknownMaint = await failure(consul.agent.service.maintenance({ id: "nope", enable: true }));
  assert.equal(unknownMaint.status, 404);

  step("node maintenance takes every instance out, then back");
  await consul.agent.maintenance({ enable: true, reason: "kernel upgrade" });
  assert.equal((await consul.agent.checks())._node_maintenance.Notes, "kernel upgrade");
  assert.deepEqual(await consul.health.service({ service: "web", passing: true }), []);
  await consul.agent.maintenance(false);
  assert.equal(
    (await consul.health.service({ service: "web", passing: true })).length,
    2,
  );

  step("deregistering a service removes its sidecar; an unknown ID is Consul's 404");
  await consul.agent.service.deregister("web-2");
  assert.deepEqual(Object.keys(await consul.agent.services()), ["web-1"]);
  assert.deepEqual(await consul.catalog.connect.nodes("web"), []);
  const unknown = await failure(consul.agent.service.deregister("web-2"));
  assert.equal(unknown.status, 404);
  assert.equal(
    unknown.body,
    'Unknown service ID "web-2". Ensure that the service ID is passed, not the service name.',
  );
  await consul.agent.service.deregister("web-1");
  assert.deepEqual(await consul.health.service("web"), []);
  assert.deepEqual(await consul.agent.checks(), {});

  step("what the registry does not do is refused by name");
  const session = await failure(consul.session.create());
  assert.equal(session.status, 501);
  assert.match(session.body, /sessions .*not supported by this registry/);
  const join = await failure(consul.agent.join("10.0.0.9"));
  assert.equal(join.status, 501);
  const acl = await failure(consul.acl.bootstrap());
  assert.equal(acl.status, 401);
  assert.equal(acl.body, "ACL support disabled");

  console.log("npm consul compatibility: all steps passed");
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
