"""Several targets, discovery and local ports, pure: the grammar, annotations, port planning."""

from __future__ import annotations

import os
import socket
import time
from typing import Any, Dict, List, Optional

import pytest

import kubectl_vibe_pf as vibe

# -- the grammar ------------------------------------------------------------------------------


def targets(*args: str) -> List[vibe.TargetArgs]:
    return vibe.parse_targets(list(args))


def test_namespace_type_name_carries_its_own_namespace() -> None:
    web, api = targets("svc/web", "8080:80", "prod/svc/api", "8081:80")

    assert (web.namespace, web.ref.text, web.ref.get_arg) == ("", "svc/web", "services/web")
    assert (api.namespace, api.ref.text, api.ref.get_arg) == ("prod", "prod/svc/api",
                                                              "services/api")  # fmt: skip
    assert [p.text for p in api.ports] == ["8081:80"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("a/b/c/d", "arguments in namespace/resource/name form may not have more than two slashes"),
        ("/svc/x", "arguments in namespace/resource/name form must have a namespace, a resource "
         "and a name"),
        ("prod//x", "arguments in namespace/resource/name form must have a namespace, a resource "
         "and a name"),
    ],
)  # fmt: skip
def test_malformed_namespace_forms_are_named(text: str, message: str) -> None:
    with pytest.raises(vibe.VibeError) as caught:
        targets(text, "80")
    assert caught.value.message == message


def test_the_same_local_port_twice_is_refused_before_anything_starts() -> None:
    both = targets("svc/web", "8080:80", "svc/api", "8080:8081")
    with pytest.raises(vibe.VibeError) as caught:
        vibe.check_local_ports_unique(both)
    assert caught.value.message == (
        "local port 8080 is asked for twice: svc/web 8080:80 and svc/api 8080:8081"
    )
    implied = targets("pod/a", "5432", "pod/b", "5432:5432")  # kubectl's 5432 is local 5432
    with pytest.raises(vibe.VibeError, match="local port 5432 is asked for twice"):
        vibe.check_local_ports_unique(implied)
    vibe.check_local_ports_unique(targets("svc/a", ":80", "svc/b", ":80", "svc/c", "http"))


# -- local ports ------------------------------------------------------------------------------


def policy(
    held: Dict[int, str], choose: bool = True, replace_busy: bool = False
) -> vibe.PortPolicy:
    return vibe.PortPolicy(
        choose, replace_busy, lambda port: port not in held, lambda port: held.get(port, "?")
    )


def planned_ports(args: List[str], **kwargs: Any) -> List[List[Optional[int]]]:
    planned, _ = vibe.plan_local_ports(targets(*args), policy(**kwargs))
    return [[spec.local for spec in target.ports] for target in planned]


@pytest.mark.parametrize(
    "remote, held, chosen",
    [
        ("80", {}, 8080),
        ("80", {8080: "x", 8081: "y"}, 8082),
        ("5432", {}, 5432),
        ("5432", {5432: "x"}, 5433),
        ("443", {}, 8443),
        ("22", {}, 8022),
    ],
)
def test_a_port_left_out_is_the_remote_port_or_next_free_one(remote, held, chosen) -> None:
    assert planned_ports(["svc/a", ":" + remote], held=held) == [[chosen]]


def test_choices_follow_argument_order_and_never_collide() -> None:
    assert planned_ports(["svc/a", ":80", "svc/b", ":80", "svc/c", ":80"], held={}) == [
        [8080], [8081], [8082],
    ]  # fmt: skip


def test_an_explicit_port_is_never_taken_by_a_chosen_one() -> None:
    assert planned_ports(["svc/a", ":80", "svc/b", "8080:80"], held={}) == [[8081], [8080]]


def test_a_single_target_keeps_kubectls_random_port_unless_asked() -> None:
    assert planned_ports(["svc/a", ":80"], held={}, choose=False) == [[0]]


def test_with_auto_ports_a_held_port_moves_to_the_next_free_one_naming_the_holder() -> None:
    held = {8080: "pid 42 (python3 -m http.server 8080)"}
    planned, choices = vibe.plan_local_ports(
        targets("svc/web", "8080:80"), policy(held, replace_busy=True)
    )

    assert planned[0].ports[0].local == 8081 and planned[0].ports[0].auto
    assert choices == [
        vibe.PortChoice("svc/web", "8080:80", 8081,
                        "port 8080 is held by pid 42 (python3 -m http.server 8080)"),
    ]  # fmt: skip
    assert planned_ports(["svc/web", "8080:80"], held=held) == [[8080]]  # without: kubectl's error


def test_a_named_remote_is_chosen_when_it_is_known() -> None:
    planned, _ = vibe.plan_local_ports(targets("svc/a", ":http", "svc/b", ":80"), policy({}))
    assert (planned[0].ports[0].local, planned[0].ports[0].auto) == (0, True)
    assert planned[1].ports[0].local == 8080


# -- annotations --------------------------------------------------------------------------------


def service(annotations: Dict[str, str], ports=((80, "http"), (5432, "pg"))) -> Dict[str, Any]:
    return {
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "shop", "annotations": annotations},
        "spec": {"ports": [{"port": port, "name": name, "protocol": "TCP"} for port, name in ports]
                 + [{"port": 53, "name": "dns", "protocol": "UDP"}]},
    }  # fmt: skip


def specs(obj: Dict[str, Any]) -> List[tuple]:
    found, _ = vibe.ports_to_forward(obj)
    return [(spec.local, spec.remote, spec.auto) for spec in found]


def test_without_annotations_every_tcp_port_of_a_service_is_forwarded() -> None:
    assert specs(service({})) == [(0, "80", True), (0, "5432", True)]  # not the UDP one


@pytest.mark.parametrize(
    "annotations, expected",
    [
        ({"kubectl-vibe.io/ports": "8080:http,5432"}, [(8080, "http", False), (0, "5432", True)]),
        ({"kftray.app/configs": "web-9999-http,db-15432-5432"},
         [(9999, "http", False), (15432, "5432", False)]),
        ({"kftray.app/configs": "my-web-app-9999-http"}, [(9999, "http", False)]),
        ({"kftray.app/enabled": "true"}, [(0, "80", True), (0, "5432", True)]),
        ({"k9scli.io/auto-port-forwards": "app::8080:http, app::5432"},
         [(8080, "http", False), (0, "5432", True)]),
        ({"k9scli.io/auto-port-forwards": "9000:metrics"}, [(9000, "metrics", False)]),
    ],
)  # fmt: skip
def test_each_annotation_format_says_which_ports(annotations, expected) -> None:
    assert specs(service(annotations)) == expected
    assert vibe.annotated_ports(service(annotations)).present


def test_the_plugins_own_annotation_wins_over_the_others() -> None:
    both = {"kubectl-vibe.io/ports": "7000:http", "kftray.app/configs": "x-9999-http"}
    assert specs(service(both)) == [(7000, "http", False)]


@pytest.mark.parametrize(
    "value, bad",
    [
        ("8080:http,a:b:c", ["kubectl-vibe.io/ports: 'a:b:c'"]),
        ("99999,http", ["kubectl-vibe.io/ports: '99999'"]),
        ("8080:HTTP_X", ["kubectl-vibe.io/ports: '8080:HTTP_X'"]),
    ],
)
def test_a_malformed_entry_is_reported_and_the_rest_is_kept(value: str, bad: List[str]) -> None:
    obj = service({"kubectl-vibe.io/ports": value})
    found, reported = vibe.ports_to_forward(obj)
    assert list(reported) == bad
    assert found  # the valid entries still count


def test_a_workloads_pod_template_annotations_count_and_its_container_ports_are_the_default():
    deployment = {
        "kind": "Deployment",
        "metadata": {"name": "cache", "namespace": "shop"},
        "spec": {"template": {
            "metadata": {"annotations": {"k9scli.io/auto-port-forwards": "redis::16379:6379"}},
            "spec": {"containers": [{"name": "redis", "ports": [{"containerPort": 6379}]}]},
        }},
    }  # fmt: skip
    assert specs(deployment) == [(16379, "6379", False)]
    del deployment["spec"]["template"]["metadata"]
    assert specs(deployment) == [(0, "6379", True)]


def test_a_discovered_object_becomes_a_target_named_with_its_namespace_when_not_the_default():
    svc = service({})
    here = vibe.discovered_target(svc, vibe.ResourceKind.SERVICE, "shop")
    there = vibe.discovered_target(svc, vibe.ResourceKind.SERVICE, "default")
    assert (here.ref.text, here.namespace) == ("svc/web", "shop")
    assert (there.ref.text, there.namespace, there.ref.get_arg) == ("shop/svc/web", "shop",
                                                                    "services/web")  # fmt: skip


def test_close_labels_point_at_a_typo() -> None:
    objects = [{"metadata": {"labels": {"app": "web", "tier": "front"}}},
               {"metadata": {"labels": {"app": "db"}}}]  # fmt: skip
    assert vibe.close_labels("app=wbe", objects) == ["app=web"]
    assert vibe.close_labels("tier in (front)", objects) == []


# -- leftovers of a SIGKILLed session -------------------------------------------------------------


def test_stale_proxy_directories_are_swept_live_and_young_ones_kept(tmp_path) -> None:
    def proxy_dir(name: str, listening: bool, age: float, extra: str = "") -> str:
        path = tmp_path / ("kubectl-vibe-" + name)
        path.mkdir(mode=0o700)
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path / "proxy.sock"))
        if listening:
            sock.listen()
            keep.append(sock)
        else:
            sock.close()
        if extra:
            (path / extra).write_text("x")
        os.utime(path, (time.time() - age, time.time() - age))
        return str(path)

    keep: List[socket.socket] = []
    dead = proxy_dir("dead", listening=False, age=600)
    live = proxy_dir("live", listening=True, age=600)
    young = proxy_dir("young", listening=False, age=1)
    foreign = proxy_dir("foreign", listening=False, age=600, extra="notes.txt")

    vibe.sweep_stale_socket_directories(str(tmp_path))

    assert not os.path.exists(dead)
    assert all(os.path.exists(path) for path in (live, young, foreign))
    for sock in keep:
        sock.close()
