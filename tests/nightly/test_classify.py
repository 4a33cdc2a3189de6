import pytest

from harness import config
from harness.nightly.classify import CONFIGURATION, INFRASTRUCTURE, PRODUCT, classify

from .conftest import REPO
from .fakes import GUEST_CREATED, XEN_BOOT, write_run


@pytest.fixture
def scenario():
    return config.load_scenario(REPO / "configs" / "scenarios" / "blkfront-io.yaml")


@pytest.mark.parametrize("behaviour,category,words", [
    ("pass", None, ""),
    ("fail", PRODUCT, "FAIL trace.model: first divergence at seq 42: blkif.grant-ended-early"),
    ("hang", PRODUCT, "FAIL hang: block I/O stopped"),
    ("oops", PRODUCT, "guest kernel: BUG: kernel NULL pointer dereference"),
    ("warn", PRODUCT, "guest kernel: WARNING: CPU: 0 PID: 77 at drivers/block/xen-blkfront.c:1290"),
    ("xen-panic", PRODUCT, "after the guest started: Assertion 'pg->count_info & PGC_allocated' failed"),
    ("infra-boot", INFRASTRUCTURE, "boot before dom0 was up: stage 'boot xen + dom0': timed out"),
    ("infra-download", INFRASTRUCTURE, "image build or package download: apt-get download"),
    ("infra-ssh", INFRASTRUCTURE, "SSH to dom0: dom0: the SSH connection failed"),
    ("xen-panic-at-boot", INFRASTRUCTURE, "boot before dom0 was up"),          # no guest yet: not guest-triggered
    ("capture-missed", INFRASTRUCTURE, "step07 quiet point after the I/O: the guest trace cannot be used"),
    # a death outside every module is the stack's (nested TCG), not the subject's, even after it loaded
    ("guest-died-twice", INFRASTRUCTURE, "the guest died outside every module: (XEN) d1v0 Triple fault"),
])
def test_classification(tmp_path, scenario, behaviour, category, words):
    write_run(tmp_path, scenario, behaviour)
    c = classify(tmp_path)
    assert c.category == category
    assert words in c.reason, c.reason
    if category == PRODUCT and behaviour not in ("fail", "hang"):
        assert any(":" in e and e.split(":")[1].isdigit() for e in c.evidence), c.evidence    # file:line: text


def test_a_fail_is_product_even_when_the_run_also_errored(tmp_path, scenario):
    write_run(tmp_path, scenario, "fail")
    import json
    rep = json.loads((tmp_path / "report.json").read_text())
    rep["outcome"] = "ERROR"
    rep["error"] = {"kind": "infrastructure", "message": "dom0: the SSH connection failed"}
    (tmp_path / "report.json").write_text(json.dumps(rep))
    assert classify(tmp_path).category == PRODUCT


def test_dom0_kernel_trouble_after_the_guest_started_is_product(tmp_path, scenario):
    write_run(tmp_path, scenario, "infra-ssh")
    (tmp_path / "serial-l0.log").write_text(XEN_BOOT + "[    3.1] WARNING: CPU: 1 PID: 9 at mm/boot.c:1 x\n"
                                            + GUEST_CREATED + "[   80.0] BUG: unable to handle page fault for address: "
                                            "ffffc90000400000\n[   80.0] RIP: xen_blkbk_unmap+0x51/0x120\n")
    c = classify(tmp_path)
    assert c.category == PRODUCT and "unable to handle page fault" in c.reason
    assert c.evidence[0].startswith("serial-l0.log:7: BUG")                  # the boot-time WARN is not counted


def test_boot_time_kernel_noise_alone_stays_infrastructure(tmp_path, scenario):
    write_run(tmp_path, scenario, "infra-boot")
    (tmp_path / "serial-l0.log").write_text(XEN_BOOT + "[    3.1] WARNING: CPU: 1 PID: 9 at mm/boot.c:1 x\n")
    assert classify(tmp_path).category == INFRASTRUCTURE


def test_no_report_is_infrastructure_with_what_the_runner_saw(tmp_path):
    c = classify(tmp_path, note="killed at the cell's time limit of 3600 s")
    assert c.category == INFRASTRUCTURE and "killed at the cell's time limit" in c.reason


def test_patch_and_build_errors_are_configuration_never_retried(tmp_path, scenario):
    write_run(tmp_path, scenario, "infra-download")
    import json
    rep = json.loads((tmp_path / "report.json").read_text())
    rep["error"] = {"kind": "patch", "message": "patch bug.patch does not apply to the driver source"}
    rep["stages"] = [{"name": "images", "start_s": 0, "duration_s": 1, "outcome": "ok", "detail": ""},
                     {"name": "build guest modules", "start_s": 1, "duration_s": 1, "outcome": "failed", "detail": ""}]
    (tmp_path / "report.json").write_text(json.dumps(rep))
    c = classify(tmp_path)
    assert c.category == CONFIGURATION and c.reason.startswith("patch: patch bug.patch")


def test_a_corrupting_stack_is_infrastructure_even_under_a_fail(tmp_path, scenario):
    write_run(tmp_path, scenario, "infra-download")
    import json
    rep = json.loads((tmp_path / "report.json").read_text())
    rep["checks"] = [{"id": "trace.model", "outcome": "FAIL", "message": "rule blkif.seg-grant", "extra": {}},
                     {"id": "stack.dom0-canary", "outcome": "ERROR", "message": "the stack corrupted dom0's memory",
                      "extra": {"kind": "corruption"}}]
    rep["error"] = None
    (tmp_path / "report.json").write_text(json.dumps(rep))
    c = classify(tmp_path)
    assert c.category == INFRASTRUCTURE and "corrupted" in c.reason


def test_a_report_still_marked_incomplete_is_infrastructure(tmp_path):
    (tmp_path / "report.json").write_text('{"schema": "xenrig-run/1", "outcome": null, "complete": false}')
    assert classify(tmp_path, note="killed").category == INFRASTRUCTURE
