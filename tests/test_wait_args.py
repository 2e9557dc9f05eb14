"""kubectl vibe wait arguments: --for grammar, the kubectl child's argv, watches (pure)."""

from __future__ import annotations

import json

import pytest

import kubectl_vibe_pf as vibe

F = vibe.ForKind


def parse(*argv: str) -> vibe.ParsedFlags:
    return vibe.FlagParser(vibe.WAIT_FLAGS, "wait").parse(list(argv))


@pytest.mark.parametrize(
    "text, kind, name, value",
    [
        ("delete", F.DELETE, "", None),
        ("DELETE", F.DELETE, "", None),
        ("create", F.CREATE, "", None),
        ("condition=Ready", F.CONDITION, "Ready", "true"),
        ("condition=Ready=false", F.CONDITION, "Ready", "false"),
        ("condition=Available=True", F.CONDITION, "Available", "True"),
        ("condition=a=b=c", F.CONDITION, "a", "b=c"),
        ("jsonpath={.status.phase}=Running", F.JSONPATH, "{.status.phase}", "Running"),
        ("jsonpath='{.status.phase}'=Running", F.JSONPATH, "{.status.phase}", "Running"),
        ("jsonpath={.status.podIP}", F.JSONPATH, "{.status.podIP}", None),
        (
            'jsonpath={.status.conditions[?(@.type=="Ready")].status}=True',
            F.JSONPATH,
            '{.status.conditions[?(@.type=="Ready")].status}',
            "True",
        ),
    ],
)
def test_for_values_are_read_as_kubectl_reads_them(text, kind, name, value):
    wanted = vibe.parse_for(text)
    assert (wanted.kind, wanted.name, wanted.value, wanted.raw) == (kind, name, value, text)


@pytest.mark.parametrize("text", ["ready", "Condition=Ready", "deleted", "", "jsonpath="])
def test_unknown_for_is_refused_with_kubectls_words(text):
    with pytest.raises(vibe.VibeError) as refused:
        vibe.parse_for(text)
    assert refused.value.message in (
        'unrecognized condition: "%s"' % text,
        "jsonpath expression cannot be empty",
    )


def test_child_argv_keeps_the_users_flags_in_order_without_ours_or_globals():
    flags = parse(
        "deploy/web",
        "-n",
        "prod",
        "--for=condition=Available",
        "-l",
        "app=web",
        "--fail-fast",
        "-o",
        "name",
        "--progress=plain",
        "--context=c1",
        "--timeout=2m",
        "--wait-for-create",
    )
    assert vibe.kubectl_wait_argv(flags, ["condition=Available"], "2m") == [
        "wait",
        "deploy/web",
        "--selector=app=web",
        "--output=name",
        "--for=condition=Available",
        "--timeout=2m",
    ]
    assert flags.globals_argv == ["--namespace=prod", "--context=c1"]


def test_child_argv_without_timeout_leaves_kubectls_default():
    flags = parse("pods", "--all", "-A", "--for", "delete", "-R=false", "-f", "a.yaml,b.yaml")
    assert vibe.kubectl_wait_argv(flags, ["delete"], None) == [
        "wait",
        "pods",
        "--all=true",
        "--all-namespaces=true",
        "--recursive=false",
        "--filename=a.yaml,b.yaml",
        "--for=delete",
    ]


@pytest.mark.parametrize(
    "seconds, effective", [(30, 30), (0, 0), (-1, 168 * 3600), (-3600, 168 * 3600)]
)
def test_timeout_follows_kubectl_zero_once_negative_a_week(seconds, effective):
    assert vibe.effective_timeout(seconds) == effective


def test_create_is_waited_first_like_kubectl_136():
    fors = [vibe.parse_for(t) for t in ("condition=Ready", "create", "jsonpath={.a}")]
    assert [f.raw for f in vibe.ordered_fors(fors)] == [
        "create",
        "condition=Ready",
        "jsonpath={.a}",
    ]


@pytest.mark.parametrize("minor, expected", [("32+", 32), ("37", 37), ("", None), (None, None)])
def test_kubectl_minor_version_is_read_from_version_json(minor, expected):
    text = json.dumps({"clientVersion": {"minor": minor}}) if minor is not None else "oops"
    assert vibe.parse_kubectl_minor(text) == expected


@pytest.mark.parametrize("minor, sequential", [(32, True), (35, True), (36, False), (37, False)])
def test_several_for_run_one_by_one_on_kubectl_before_136(minor, sequential):
    options = vibe.WaitOptions.from_flags(parse("pod/x", "--for=create", "--for=condition=Ready"))
    options.kubectl_minor = minor
    assert options.needs_kubectl_version
    assert options.sequential_fors is sequential


def test_one_for_never_needs_the_kubectl_version():
    options = vibe.WaitOptions.from_flags(parse("pod/x", "--for=delete"))
    assert not options.needs_kubectl_version and not options.sequential_fors
    assert options.decided_by_kubectl


def test_no_for_means_our_readiness_decides():
    options = vibe.WaitOptions.from_flags(parse("deploy/web", "--timeout=-1s"))
    assert not options.decided_by_kubectl
    assert options.timeout_s == -1 and options.timeout_text == "-1s"


def test_progress_mode_is_checked():
    assert vibe.WaitOptions.from_flags(parse("x", "--progress=json")).progress is (
        vibe.ProgressMode.JSON
    )
    with pytest.raises(vibe.UsageError) as refused:
        vibe.WaitOptions.from_flags(parse("x", "--progress=loud"))
    assert 'invalid argument "loud" for "--progress" flag' in refused.value.render()


def test_a_resource_is_required():
    options = vibe.WaitOptions.from_flags(parse("--for=delete"))
    with pytest.raises(vibe.UsageError) as refused:
        options.validate()
    assert "you must specify a resource" in refused.value.render()


@pytest.mark.parametrize(
    "argv, specs",
    [
        (["deploy/web"], [(("get", "deploy", "--field-selector=metadata.name=web"), {"web"})]),
        (
            ["pod/a", "pod/b", "deploy/web"],
            [
                (("get", "pod"), {"a", "b"}),
                (("get", "deploy", "--field-selector=metadata.name=web"), {"web"}),
            ],
        ),
        (["pods", "a"], [(("get", "pods", "--field-selector=metadata.name=a"), {"a"})]),
        (
            ["pods", "-l", "app=web", "-A"],
            [(("get", "pods", "--selector=app=web", "--all-namespaces"), None)],
        ),
        (["jobs", "--all"], [(("get", "jobs"), None)]),
        (
            ["-f", "m.yaml", "--for=delete"],
            [(("get", "--filename=m.yaml", "--recursive=true"), None)],
        ),
    ],
)
def test_watches_cover_what_kubectl_wait_visits_one_type_each(argv, specs):
    got = vibe.watch_specs(parse(*argv))
    assert [(s.args, None if s.names is None else set(s.names)) for s in got] == specs


def test_dry_run_of_typed_arguments_shows_the_kubectl_wait_that_would_run():
    options = vibe.WaitOptions.from_flags(
        parse("deploy/web", "-n", "prod", "--for=condition=Available", "--timeout=5m",
              "--dry-run", "--progress=json")
    )  # fmt: skip
    assert options.arrow_line("kubectl vibe") == (
        "→ kubectl wait deploy/web --for=condition=Available --timeout=5m --namespace=prod"
    )
    readiness = vibe.WaitOptions.from_flags(parse("deploy/web", "--fail-fast", "--dry-run"))
    assert readiness.arrow_line("kubectl vibe") == "→ kubectl vibe wait deploy/web --fail-fast"
