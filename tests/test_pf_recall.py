"""Remembered forwards (@N, @NAME, --recent, --save, --forget) and the project file's groups.

The store and the file rules need no cluster; the end-to-end part runs real kubectl against the
simulated cluster (two of them for a group spanning two contexts)."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

import kubectl_vibe_pf as vibe

from .kubectl_proc import KubectlProcess
from .sim_backends import Backend
from .simcluster import ContainerPort, ServicePort, SimCluster

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULE = os.path.join(REPO, "kubectl_vibe_pf.py")


def forward_set(*words: str, **fields) -> vibe.ForwardSet:
    groups = vibe.split_targets(list(words))
    targets = tuple((text, tuple(ports)) for text, ports in groups)
    return vibe.ForwardSet(targets, **fields)


def stored(name: str, uses: int, hours_ago: float, now: float = 1e9, *words: str) -> vibe.StoredSet:
    last = now - hours_ago * 3600
    return vibe.StoredSet(forward_set(*(words or ("svc/" + (name or "x"), "80"))), name, uses,
                          last - 100, last)  # fmt: skip


# -- frecency and recall ------------------------------------------------------------------------


def test_frecency_weighs_uses_by_how_recent_the_last_one_was() -> None:
    now = 1e9
    entries = [
        stored("daily", 20, 30, now),  # 20 uses, last yesterday: 20 × 60
        stored("old", 50, 24 * 60, now),  # 50 uses, two months ago: 50 × 10
        stored("new", 3, 0.5, now),  # 3 uses, half an hour ago: 3 × 100
        stored("week", 10, 24 * 6, now),  # 10 uses, 6 days ago: 10 × 40
    ]
    assert [e.name for e in vibe.rank_stored(entries, now)] == ["daily", "old", "week", "new"]


def test_recall_by_number_and_by_name() -> None:
    ranked = vibe.rank_stored([stored("dev", 5, 1), stored("", 9, 1)], 1e9)
    assert vibe.pick_stored("@1", ranked) is ranked[0]
    assert vibe.pick_stored("@dev", ranked).name == "dev"
    assert vibe.pick_stored("@3", ranked) is None and vibe.pick_stored("@nope", ranked) is None


def test_a_set_is_one_entry_whatever_order_its_flags_were_given_in() -> None:
    a = forward_set("svc/web", "8080:80", flags=(("balance", True), ("address", ["0.0.0.0"])))
    b = forward_set("svc/web", "8080:80", flags=(("address", ["0.0.0.0"]), ("balance", True)))
    c = forward_set("svc/web", "8080:80", namespace="prod")
    assert a.key == b.key != c.key
    assert forward_set("svc/web", "8080:80", "svc/db", "5432").describe() == (
        "svc/web 8080:80, svc/db 5432"
    )


def test_recent_lines_name_number_place_targets_and_age() -> None:
    entry = stored("dev", 3, 2, 1e9, "svc/web", "8080:80")
    entry = vibe._replace_record(entry, forward_set=vibe._replace_record(
        entry.forward_set, context="kind-dev", namespace="shop"))  # fmt: skip
    (line,) = vibe.recent_lines([entry], 1e9, groups=["dev"])
    assert line.split() == ["1", "@dev", "kind-dev/shop", "svc/web", "8080:80", "2h", "ago,",
                            "3", "uses", "(the", "project", "file's", "@dev", "wins)"]  # fmt: skip


# -- the store -------------------------------------------------------------------------------------


def test_the_store_is_private_and_keeps_what_is_recorded(tmp_path) -> None:
    store = vibe.ForwardStore(str(tmp_path / "state"))
    web = forward_set("svc/web", "8080:80", context="kind-dev", namespace="shop")

    assert store.record(web, "dev", ["127.0.0.1:8080 → svc/web :8080"], 100.0)
    assert store.record(web, "", [], 200.0)

    (entry,) = store.load()
    assert (entry.name, entry.uses, entry.first_use, entry.last_use) == ("dev", 2, 100.0, 200.0)
    assert entry.forward_set == web
    assert oct(os.stat(store.directory).st_mode & 0o777) == "0o700"
    assert oct(os.stat(store.path).st_mode & 0o777) == "0o600"
    assert json.loads(Path(store.path).read_text())["version"] == 1


def test_a_name_moves_to_the_set_saved_under_it_last(tmp_path) -> None:
    store = vibe.ForwardStore(str(tmp_path))
    store.record(forward_set("svc/a", "80"), "dev", [], 1.0)
    store.record(forward_set("svc/b", "80"), "dev", [], 2.0)
    names = {e.forward_set.describe(): e.name for e in store.load()}
    assert names == {"svc/a 80": "", "svc/b 80": "dev"}


def _record_many(directory: str, index: int, same: bool) -> None:
    store = vibe.ForwardStore(directory)
    words = ("svc/shared", "80") if same else ("svc/s%d" % index, "80")
    assert store.record(forward_set(*words), "", [], float(index))


@pytest.mark.parametrize("same", [False, True], ids=["50 sets", "one set 50 times"])
def test_50_processes_writing_at_once_lose_nothing(tmp_path, same: bool) -> None:
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_record_many, args=(str(tmp_path), n, same))
               for n in range(50)]  # fmt: skip
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    assert [worker.exitcode for worker in workers] == [0] * 50

    entries = vibe.ForwardStore(str(tmp_path)).load()
    if same:
        assert [e.uses for e in entries] == [50]
    else:
        assert sorted(e.forward_set.targets[0][0] for e in entries) == sorted(
            "svc/s%d" % n for n in range(50))  # fmt: skip
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".forwards-")]


def test_a_corrupt_store_is_kept_aside_with_a_warning_and_the_command_goes_on(tmp_path) -> None:
    store = vibe.ForwardStore(str(tmp_path))
    os.makedirs(store.directory, exist_ok=True)
    with open(store.path, "w") as handle:
        handle.write('{"version": 1, "entries": [tru')

    assert store.load() == []
    (warning,) = store.warnings
    aside = [name for name in os.listdir(tmp_path) if name.startswith("forwards.json.corrupt-")]
    assert len(aside) == 1 and aside[0] in warning and "unreadable" in warning
    assert store.record(forward_set("svc/web", "80"), "", [], 1.0)  # a fresh store from here
    assert len(store.load()) == 1


def test_a_store_from_a_newer_version_is_left_alone(tmp_path) -> None:
    store = vibe.ForwardStore(str(tmp_path))
    os.makedirs(store.directory, exist_ok=True)
    newer = json.dumps({"version": 2, "entries": [{"future": True}]})
    with open(store.path, "w") as handle:
        handle.write(newer)

    assert store.load() == []
    assert not store.record(forward_set("svc/web", "80"), "", [], 1.0)
    assert Path(store.path).read_text() == newer
    assert any("newer kubectl-vibe (store version 2" in w for w in store.warnings)


def test_an_unwritable_state_directory_is_one_warning(tmp_path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    store = vibe.ForwardStore(str(blocker / "kubectl-vibe"))
    assert not store.record(forward_set("svc/web", "80"), "", [], 1.0)
    assert store.warnings and store.warnings[0].startswith("cannot remember forwards in ")


# -- the project file -----------------------------------------------------------------------------

PROJECT = """\
groups:
  dev:
    context: kind-dev        # optional, per group
    namespace: shop
    forwards:
      - svc/web 8080:80
      - svc/db 5432
      - prod/svc/api 8081:80
      - selector: app=cache
  ops:
    forwards:
      - target: deploy/grafana :3000
      - annotated: true
        all-namespaces: true
"""


def test_a_project_file_declares_named_groups() -> None:
    groups = vibe.parse_project(PROJECT, ".kubectl-vibe.yaml")

    dev, ops = groups["dev"], groups["ops"]
    assert (dev.context, dev.namespace) == ("kind-dev", "shop")
    assert dev.targets == (("svc/web", ("8080:80",)), ("svc/db", ("5432",)),
                           ("prod/svc/api", ("8081:80",)))  # fmt: skip
    assert dev.discoveries == (vibe.DiscoverySpec("app=cache", namespace="shop",
                                                  context="kind-dev"),)  # fmt: skip
    api = next(t for t in dev.target_args() if t.ref.name == "api")
    assert (api.namespace, api.context) == ("prod", "kind-dev")
    assert ops.discoveries == (vibe.DiscoverySpec("", True, True),)


@pytest.mark.parametrize(
    "text, line, problem",
    [
        ("groups:\n  dev:\n    namespaces: x\n    forwards: [svc/a 80]\n", 3,
         "unknown key 'namespaces' (did you mean 'namespace'?)"),
        ("group:\n  dev: {}\n", 1, "unknown key 'group' (did you mean 'groups'?)"),
        ("groups:\n  dev:\n    forwards:\n      - svc/web\n", 4,
         "'svc/web': a target needs TYPE/NAME and at least one port"),
        ("groups:\n  dev:\n    forwards:\n      - svc/web 1:2:3\n", 4,
         "'svc/web 1:2:3': invalid port format '1:2:3'"),
        ("groups:\n  dev:\n    forwards:\n      - {selectr: app=x}\n", 4,
         "unknown key 'selectr' (did you mean 'selector'?)"),
        ("groups:\n  dev:\n    context: x\n", 2, "group dev has no forwards"),
        ("groups:\n  dev:\n    forwards: svc/a 80\n", 3, "forwards: expected a list"),
        ("groups:\n  dev:\n    forwards:\n      - svc/a 80\n  'bad name':\n    forwards: []\n", 5,
         "group name 'bad name': use letters, digits, '.', '_' and '-'"),
        ("groups: [1, 2]\n", 1, "groups: expected a mapping"),
        ("groups:\n  dev:\n    forwards:\n      - svc/a 80\n    - oops\n", 5, "not valid YAML"),
        ("groups:\n  dev: !!python/object:os.system {}\n", 2, "not valid YAML"),
    ],
)  # fmt: skip
def test_every_mistake_is_one_line_with_its_line_number(text: str, line: int, problem: str):
    with pytest.raises(vibe.ProjectError) as caught:
        vibe.parse_project(text, "/work/app/.kubectl-vibe.yaml")
    rendered = caught.value.render()
    assert rendered.startswith("error: /work/app/.kubectl-vibe.yaml:%d: %s" % (line, problem)), (
        rendered
    )
    assert "\n" not in rendered


def test_the_project_file_is_found_from_a_subdirectory(tmp_path) -> None:
    (tmp_path / ".kubectl-vibe.yaml").write_text(PROJECT)
    deep = tmp_path / "src" / "app"
    deep.mkdir(parents=True)
    assert vibe.find_project_file(str(deep)) == str(tmp_path / ".kubectl-vibe.yaml")
    assert vibe._project_group_names(str(tmp_path / ".kubectl-vibe.yaml")) == ["dev", "ops"]


def test_completion_offers_groups_names_and_numbers(tmp_path, monkeypatch) -> None:
    (tmp_path / ".kubectl-vibe.yaml").write_text(PROJECT)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    store = vibe.ForwardStore()
    store.record(forward_set("svc/web", "8080:80"), "web", [], time.time())
    store.record(forward_set("svc/db", "5432"), "", [], time.time() - 60)

    values = [c.split("\t")[0] for c in vibe.completion_candidates(["pf", "@"])]
    assert values == ["@dev", "@ops", "@web", "@1", "@2"]
    assert [c.split("\t")[0] for c in vibe.completion_candidates(["pf", "@d"])] == ["@dev"]


# -- end to end ------------------------------------------------------------------------------------


def add_app(sim: SimCluster, name: str, namespace: str = "default") -> None:
    sim.add_deployment(name, namespace=namespace, ports=[ContainerPort("http", 8080)],
                       backends={8080: Backend.http()})  # fmt: skip
    sim.add_service(name, {"app": name}, [ServicePort(80, "http", name="web")],
                    namespace=namespace)  # fmt: skip


class Plugin:
    def __init__(self, env: Dict[str, str], cwd: str) -> None:
        self.env = env
        self.cwd = cwd
        self.procs: List[KubectlProcess] = []

    def start(self, *args: str) -> KubectlProcess:
        proc = KubectlProcess(sys.executable, [MODULE, "pf", *args, "--no-live"], self.env)
        self.procs.append(proc)
        return proc

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, MODULE, "pf", *args], env=self.env, cwd=self.cwd,
                              capture_output=True, text=True, timeout=30)  # fmt: skip

    def session(self, *args: str, until: int = 1) -> KubectlProcess:
        """Start, wait for `until` forwarded ports, stop with Ctrl-C (remembered by then)."""
        proc = self.start(*args)
        for _ in range(until):
            proc.wait_line(r"^Forwarding from 127\.0\.0\.1:")
        time.sleep(0.5)  # the store is written once the first forward is ready
        os.kill(proc.proc.pid, signal.SIGINT)
        assert proc.wait() == 0, proc.err
        return proc

    def close(self) -> None:
        for proc in self.procs:
            proc.stop()


@pytest.fixture
def plugin(sim_cluster: SimCluster, kubectl_bin: str, tmp_path) -> Iterator[Plugin]:
    env = sim_cluster.env()
    env["KUBECTL_PATH"] = kubectl_bin
    runner = Plugin(env, str(tmp_path))
    yield runner
    runner.close()


@pytest.mark.e2e
def test_recall_by_name_and_number_with_extra_arguments(plugin: Plugin, sim_cluster) -> None:
    add_app(sim_cluster, "web")
    add_app(sim_cluster, "db")
    sim_cluster.add_namespace("staging")
    add_app(sim_cluster, "web", namespace="staging")
    sim_cluster.wait_for(lambda: len(sim_cluster.pods(ready=True)) == 2)
    sim_cluster.wait_for(lambda: sim_cluster.pods(ready=True, namespace="staging"))
    plugin.session("svc/web", "18080:80", "--save", "dev")

    again = plugin.start("@dev", "-n", "staging")  # a flag overrides the remembered namespace
    again.wait_line(r"^Forwarding from 127\.0\.0\.1:18080 -> 8080$")
    listed = plugin.run("--recent")
    assert "@dev" in listed.stdout and "sim/default" in listed.stdout
    os.kill(again.proc.pid, signal.SIGINT)
    assert again.wait() == 0 and "svc/web :8080 (pod web-" in again.err
    assert "(pod web-" in again.err
    plus = plugin.session("@dev", "svc/db", "15432:80", until=2)  # @dev plus one more target
    assert "→ svc/db :8080" in plus.err and "→ svc/web :8080" in plus.err

    recent = json.loads(plugin.run("--recent", "-o", "json").stdout)
    dev = next(e for e in recent if e["name"] == "dev")
    assert dev["uses"] == 3 and dev["targets"] == [["svc/web", ["18080:80"]]]
    by_number = plugin.session("@%d" % dev["number"])
    assert "→ svc/web :8080" in by_number.err
    assert plugin.run("--forget", "@dev").returncode == 0
    assert "@dev" not in plugin.run("--recent").stdout


@pytest.mark.e2e
def test_a_remembered_local_port_taken_today_moves_and_says_so(plugin: Plugin, sim_cluster):
    add_app(sim_cluster, "web")
    sim_cluster.wait_for(lambda: sim_cluster.pods(ready=True))
    plugin.session("svc/web", "18090:80", "--save", "web", "--address", "127.0.0.1")
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", 18090))
        holder.listen()
        proc = plugin.start("@web")
        proc.wait_line(r"^Forwarding from 127\.0\.0\.1:18091 -> 8080$")
    proc.wait_line(r"\[vibe\] svc/web ports: 18090:80: local port 18091: port 18090 is held by "
                   r"pid %d" % os.getpid(), stream="stderr")  # fmt: skip


@pytest.mark.e2e
def test_a_group_spans_two_contexts_and_two_namespaces(kubectl_bin: str, tmp_path) -> None:
    with SimCluster() as one, SimCluster() as two:
        add_app(one, "web")
        two.add_namespace("prod")
        add_app(two, "api", namespace="prod")
        one.wait_for(lambda: one.pods(ready=True))
        two.wait_for(lambda: two.pods(ready=True, namespace="prod"))
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(two_contexts(one.url, two.url))
        (tmp_path / ".kubectl-vibe.yaml").write_text(
            "groups:\n  both:\n    forwards:\n      - svc/web 18100:80\n"
            "  prod:\n    context: two\n    namespace: prod\n    forwards:\n"
            "      - svc/api 18101:80\n"
        )
        env = one.env()
        env.update(KUBECONFIG=str(kubeconfig), KUBECTL_PATH=kubectl_bin)
        proc = subprocess.Popen([sys.executable, MODULE, "pf", "@both", "@prod", "--no-live"],
                                env=env, cwd=str(tmp_path), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip
        try:
            lines = [proc.stdout.readline().strip() for _ in range(4)]
            assert "Forwarding from 127.0.0.1:18100 -> 8080" in lines
            assert "Forwarding from 127.0.0.1:18101 -> 8080" in lines
            assert http_pod(18100).startswith("web-") and http_pod(18101).startswith("api-")
            proxies = [c for c in child_commands(proc.pid) if "proxy" in c]
            assert sorted(c[-1] for c in proxies) == ["--context=two", "--keepalive=30s"]
        finally:
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=20)
        assert proc.returncode == 0
        assert "→ two:svc/api :8080" in err and "→ svc/web :8080" in err


def two_contexts(one: str, two: str) -> str:
    return (
        "apiVersion: v1\nkind: Config\nclusters:\n"
        "- name: one\n  cluster:\n    server: %s\n- name: two\n  cluster:\n    server: %s\n"
        "contexts:\n- name: one\n  context: {cluster: one, user: u, namespace: default}\n"
        "- name: two\n  context: {cluster: two, user: u}\n"
        "current-context: one\nusers:\n- name: u\n  user: {}\n" % (one, two)
    )


def http_pod(port: int) -> str:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/")
    response = conn.getresponse()
    response.read()
    conn.close()
    return response.getheader("X-Pod") or ""


def child_commands(pid: int) -> List[List[str]]:
    import psutil

    return [child.cmdline() for child in psutil.Process(pid).children(recursive=True)]
