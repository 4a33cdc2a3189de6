"""Lifecycle steps' control flow over a fake guest: what runs in the guest,
in which order, and what a refusal reports."""

from types import SimpleNamespace

import pytest

from harness.capture.lifecycle import Lifecycle
from harness.errors import InfraError


class FakeGuest:
    def __init__(self, answers):
        self.commands = []
        self.answers = answers   # (substring, exit status, stdout), first match wins

    def run(self, command, timeout_s=None, **_):
        self.commands.append(command)
        for part, status, out in self.answers:
            if part in command:
                return SimpleNamespace(exit_status=status, stdout=out, ok=status == 0)
        return SimpleNamespace(exit_status=0, stdout="", ok=True)


def _lifecycle(guest, vdevs=("xvda", "xvdb")):
    capture = SimpleNamespace(xen=None, guest=guest, vdevs=list(vdevs), rings_stale=False, scripted={},
                              blkfront=SimpleNamespace(name="xen_blkfront"))
    return Lifecycle(capture), capture


def test_unload_unbinds_every_vbd_before_rmmod():
    # xenbus_dev_probe holds a module reference per bound device: rmmod first would be refused
    guest = FakeGuest([("test -e /sys/module", 1, "")])
    life, capture = _lifecycle(guest)
    out = life.unload(60)
    unbinds = [c for c in guest.commands if "drivers/vbd/unbind" in c]
    assert ["vbd-51712" in unbinds[0], "vbd-51728" in unbinds[1]] == [True, True]
    assert guest.commands.index(unbinds[-1]) < next(i for i, c in enumerate(guest.commands) if c.startswith("rmmod"))
    assert out["unloaded"] and out["unbound"] == ["xvda", "xvdb"] and capture.rings_stale
    assert capture.vdevs == ["xvda", "xvdb"]   # the devices stay: a load binds them again


def test_a_refused_rmmod_names_the_refcount_and_holders():
    guest = FakeGuest([("rmmod", 1, "rmmod: can't unload module: Resource temporarily unavailable"),
                       ("refcnt", 0, "1\n")])
    life, _ = _lifecycle(guest)
    with pytest.raises(InfraError, match=r"Resource temporarily unavailable.*xvda, xvdb.*holders are: 1"):
        life.unload(60)


def test_idle_checks_the_guest_still_answers(monkeypatch):
    monkeypatch.setattr("harness.capture.lifecycle.time.sleep", lambda s: None)
    life, _ = _lifecycle(FakeGuest([("uptime", 255, "")]))
    with pytest.raises(InfraError, match="did not answer after 75 s idle"):
        life.idle(75)
    life, _ = _lifecycle(FakeGuest([]))
    assert life.idle(75)["idle_s"] == 75


class FakeXen:
    def __init__(self, front_state):
        self.front_state = front_state
        self.xl_calls = []

    def run(self, command, timeout_s=None, **_):
        if "/backend 2>/dev/null" in command:
            return SimpleNamespace(stdout=f"{self.front_state}\n/local/domain/0/backend/vbd/3/51712\n", ok=True)
        return SimpleNamespace(stdout="6\n", ok=True)

    def xl(self, command, check=False, timeout_s=None):
        self.xl_calls.append(command)
        return SimpleNamespace(ok=True, exit_status=0, stdout="", stderr="")


@pytest.mark.parametrize("front_state, remade", [(6, ["xvda"]), (4, [])])
def test_load_remakes_through_the_toolstack_a_vbd_left_closed(monkeypatch, front_state, remade):
    # blkfront does not allow rebind: a vbd its unload unbound stays Closed until made anew
    monkeypatch.setattr("harness.capture.lifecycle.guest_modules.insmod",
                        lambda guest, mod, timeout_s: SimpleNamespace(loaded_build_id="ab" * 20))
    monkeypatch.setattr("harness.capture.lifecycle.guest_modules.wait_disks", lambda *a: 0.0)
    from harness.config import DiskConfig
    xen = FakeXen(front_state)
    guest = SimpleNamespace(domid=3, name="xenrig-guest", paths=SimpleNamespace(vbd_image=lambda d: f"/r/vbd-{d.vdev}.img"))
    capture = SimpleNamespace(xen=xen, guest=guest, vdevs=["xvda"], rings_stale=False, attached={}, slow={}, scripted={},
                              blkfront=SimpleNamespace(name="xen_blkfront"),
                              scenario=SimpleNamespace(guest=SimpleNamespace(disks=[DiskConfig("xvda", "phy", 64)])))
    out = Lifecycle(capture).load(60)
    assert out["remade"] == remade and capture.rings_stale
    if remade:
        assert xen.xl_calls[0] == "block-detach xenrig-guest xvda"
        assert xen.xl_calls[1].startswith("block-attach xenrig-guest ") and "vdev=xvda" in xen.xl_calls[1]
        assert "target=/r/vbd-xvda.img" in xen.xl_calls[1]
    else:
        assert xen.xl_calls == []


def test_a_detach_that_never_completes_says_what_xl_said(monkeypatch):
    monkeypatch.setattr("harness.capture.lifecycle.time.sleep", lambda s: None)
    xen = FakeXen(5)
    xen.xl = lambda command, check=False, timeout_s=None: SimpleNamespace(
        ok=False, exit_status=1, stdout="", stderr="libxl: error: timed out waiting for the backend")
    guest = FakeGuest([("test -e /sys/bus/xen/devices/vbd-", 0, "")])   # the device never goes
    guest.name = "xenrig-guest"
    guest.domid = 3
    capture = SimpleNamespace(xen=xen, guest=guest, vdevs=["xvdc"], attached={}, stalled=[], slow={}, scripted={})
    with pytest.raises(InfraError, match=r"still a device .*xl said \(exit 1\): libxl: error: timed out"):
        Lifecycle(capture).detach("xvdc", 0.01)


def _attaching(xen, present, first_disk):
    """A capture whose guest (domid 3) has `first_disk` and shows a device
    while present["yes"]."""
    guest = FakeGuest([])
    guest.run = lambda command, timeout_s=None, **_: SimpleNamespace(exit_status=0 if present["yes"] else 1, ok=True,
                                                                     stdout="")
    guest.name, guest.domid = "xenrig-guest", 3
    guest.paths = SimpleNamespace(vbd_image=lambda d: f"/r/vbd-{d.vdev}.img")
    return SimpleNamespace(xen=xen, guest=guest, vdevs=["xvda"], attached={}, stalled=[], slow={}, scripted={}, rings_stale=False,
                           scenario=SimpleNamespace(guest=SimpleNamespace(disks=[first_disk])))


def test_a_stalled_vbd_goes_through_xl_with_the_holding_script_and_its_ring_is_learned_until_detached(monkeypatch):
    """target: stalled: libxl runs our hotplug script, which never hands
    blkback a device; the step reports both ends' states and the capture
    keeps learning the ring until the detach has removed the device."""
    monkeypatch.setattr("harness.capture.lifecycle.time.sleep", lambda s: None)
    from harness.config import DiskConfig, VbdStep
    xen = FakeXen(3)
    xen.run = lambda command, timeout_s=None, **_: SimpleNamespace(
        stdout="3\n/local/domain/0/backend/vbd/3/51744\n" if "/backend 2>/dev/null" in command else "2\n", ok=True)
    present = {"yes": True}
    capture = _attaching(xen, present, DiskConfig("xvda", "phy", 64))
    out = Lifecycle(capture).attach(VbdStep(op="attach", vdev="xvdc", target="stalled", settle_s=1), 60)
    [call] = xen.xl_calls
    assert call.startswith("block-attach xenrig-guest ") and "backendtype=phy" in call
    assert "script=/run/xenrig/agent/stallhotplug.py,target=xr-stalled" in call   # target= last
    assert out["frontend_state"] == "Initialised" and out["backend_state"] == "InitWait" and not out["connected"]
    assert out["guest_device"] and capture.stalled == ["xvdc"] and capture.vdevs == ["xvda"] and capture.rings_stale
    present["yes"] = False
    Lifecycle(capture).detach("xvdc", 60)
    assert capture.stalled == [] and capture.vdevs == ["xvda"]


def test_stalled_needs_the_kernels_blkback():
    from harness.config import VbdStep
    assert VbdStep(target="stalled", backend="qdisk").validate()[0] == "target"
    assert VbdStep(target="stalled").validate() is None


def test_a_slow_vbd_stands_on_a_null_blk_disk_made_before_and_removed_after_it(monkeypatch):
    """target: slow: dom0 makes a timer-completed null_blk device named for
    the guest and vdev, xl attaches it as phy, the detach removes it."""
    monkeypatch.setattr("harness.capture.lifecycle.time.sleep", lambda s: None)
    monkeypatch.setattr("harness.capture.lifecycle.guest_modules.wait_disks", lambda *a: 0.0)
    from harness.config import DiskConfig, VbdStep
    xen = FakeXen(4)
    dom0 = []

    def run(command, timeout_s=None, **_):
        dom0.append(command)
        if "/backend 2>/dev/null" in command:
            return SimpleNamespace(stdout="4\n/local/domain/0/backend/vbd/3/51728\n", ok=True, exit_status=0, stderr="")
        if "modprobe null_blk" in command:
            return SimpleNamespace(stdout="/dev/xrslow-3-xvdb\n", ok=True, exit_status=0, stderr="")
        return SimpleNamespace(stdout="4\n", ok=True, exit_status=0, stderr="")
    xen.run = run
    present = {"yes": True}
    capture = _attaching(xen, present, DiskConfig("xvda", "qdisk", 64))
    out = Lifecycle(capture).attach(VbdStep(op="attach", vdev="xvdb", target="slow", size_mib=32, latency_ms=250), 60)
    made = next(c for c in dom0 if "modprobe null_blk" in c)
    assert "nr_devices=0" in made and "mkdir /sys/kernel/config/nullb/xrslow-3-xvdb" in made
    assert "echo 250000000 > /sys/kernel/config/nullb/xrslow-3-xvdb/completion_nsec" in made
    assert "echo 32 > /sys/kernel/config/nullb/xrslow-3-xvdb/size" in made
    [call] = xen.xl_calls
    # A slow disk is blkback's even when the guest's first disk is on qdisk.
    assert "backendtype=phy" in call and call.endswith("target=/dev/xrslow-3-xvdb")
    assert out["connected"] and capture.slow == {"xvdb": ("xrslow-3-xvdb", "/dev/xrslow-3-xvdb")}
    assert capture.vdevs == ["xvda", "xvdb"]
    present["yes"] = False
    Lifecycle(capture).detach("xvdb", 60)
    assert capture.slow == {} and capture.vdevs == ["xvda"]
    assert any("rmdir /sys/kernel/config/nullb/xrslow-3-xvdb" in c for c in dom0)


def test_a_slow_disk_dom0_cannot_make_is_an_error_naming_null_blk():
    from harness.host import slow_disk
    calls = []

    def run(command, timeout_s=None, **_):
        calls.append(command)
        return SimpleNamespace(stdout="", stderr="modprobe: FATAL: Module null_blk not found", ok=False, exit_status=1)
    with pytest.raises(InfraError, match="null_blk not found") as err:
        slow_disk.create(SimpleNamespace(run=run), 5, "xvdc", 16, 100)
    assert "CONFIG_BLK_DEV_NULL_BLK" in err.value.paragraph()
    assert "rmdir /sys/kernel/config/nullb/xrslow-5-xvdc" in calls[-1]   # nothing half-made stays


@pytest.mark.parametrize("domid, vdev", [(0, "xvda"), (3, "xvd;a"), (3, "sda"), ("3", "xvda")])
def test_slow_disk_names_take_only_a_guest_domid_and_a_vdev(domid, vdev):
    from harness.host import slow_disk
    with pytest.raises(ValueError):
        slow_disk.name_for(domid, vdev)


def test_slow_needs_the_kernels_blkback():
    from harness.config import VbdStep
    assert VbdStep(target="slow", backend="qdisk").validate()[0] == "target"
    assert VbdStep(target="slow", size_mib=8192).validate()[0] == "size_mib"
    assert VbdStep(target="slow").validate() is None


def _restoring(tmp_path, monkeypatch, save_ok=True):
    monkeypatch.setattr("harness.capture.lifecycle.time.sleep", lambda s: None)
    monkeypatch.setattr("harness.capture.lifecycle.hvm.wait_ready", lambda *a: None)
    monkeypatch.setattr("harness.capture.lifecycle.guest_modules.wait_disks", lambda *a: 0.0)
    from harness.config import DiskConfig
    xen = FakeXen(4)
    dom0 = []
    domids = iter([7])

    def run(command, timeout_s=None, **_):
        dom0.append(command)
        if "/backend 2>/dev/null" in command:
            return SimpleNamespace(stdout="4\n/local/domain/0/backend/vbd/7/51712\n", ok=True, exit_status=0, stderr="")
        return SimpleNamespace(stdout="console before\n" if command.startswith("cat ") else "4\n", ok=True,
                               exit_status=0, stderr="")

    def xl(command, check=False, timeout_s=None):
        xen.xl_calls.append(command)
        ok = save_ok or not command.startswith("save")
        return SimpleNamespace(ok=ok, exit_status=0 if ok else 1, stdout="", stderr="" if ok else "xc: error: suspend failed")
    xen.run, xen.xl = run, xl
    xen.domid = lambda name: next(domids)
    capture = _attaching(xen, {"yes": True}, DiskConfig("xvda", "phy", 64))
    capture.guest.paths = SimpleNamespace(run_dir="/run/xenrig/guests/xenrig-guest",
                                          console_log="/run/xenrig/guests/xenrig-guest/console.log")
    capture.run_dir, capture.ring_names, capture.names_before_resume = tmp_path, {8: "xvda/0"}, None
    capture.drained = 0
    capture.drain = lambda: setattr(capture, "drained", capture.drained + 1)
    return Lifecycle(capture), capture, xen, dom0


def test_save_restore_drains_first_then_follows_the_guest_into_its_new_domain(tmp_path, monkeypatch):
    life, capture, xen, dom0 = _restoring(tmp_path, monkeypatch)
    out = life.save_restore(120)
    assert xen.xl_calls == ["save xenrig-guest /run/xenrig/guests/xenrig-guest/save.img",
                            "restore /run/xenrig/guests/xenrig-guest/save.img"]
    assert capture.drained == 1 and capture.guest.domid == 7 and capture.rings_stale
    # The ring names as they were, for the events before the resume record.
    assert capture.names_before_resume == {8: "xvda/0"} and capture.names_before_resume is not capture.ring_names
    assert (out["old_domid"], out["new_domid"], out["connected"]) == (3, 7, True)
    assert (tmp_path / "guest-console-d3.log").read_text() == "console before\n"
    assert any(c.startswith("rm -f /run/xenrig/guests/xenrig-guest/save.img") for c in dom0)
    assert any("/local/domain/7/device/vbd/51712/state" in c for c in dom0)   # polled in the new domain


def test_a_save_xl_refuses_is_an_error_with_xls_words_and_no_image_left(tmp_path, monkeypatch):
    life, capture, xen, dom0 = _restoring(tmp_path, monkeypatch, save_ok=False)
    with pytest.raises(InfraError, match="'xl save' of xenrig-guest failed .*suspend failed"):
        life.save_restore(120)
    assert xen.xl_calls == ["save xenrig-guest /run/xenrig/guests/xenrig-guest/save.img"]
    assert capture.guest.domid == 3 and capture.names_before_resume is None
    assert dom0[-1].startswith("rm -f /run/xenrig/guests/xenrig-guest/save.img")


def _migrating(tmp_path, monkeypatch, migrate_ok=True):
    from harness.config import DiskConfig
    life, capture, xen, dom0 = _restoring(tmp_path, monkeypatch)
    run_dir = "/run/xenrig/guests/xenrig-guest"
    capture.guest.paths.config, capture.guest.paths.agent_socket = f"{run_dir}/guest.xl", f"{run_dir}/agent.sock"
    capture.guest.paths.vbd_image = lambda d: f"{run_dir}/vbd-{d.vdev}.img"
    # xvdb was attached during the run, on a slow disk: libxl knew of it, -C must say it too
    capture.vdevs, capture.stalled = ["xvda", "xvdb"], []
    capture.attached, capture.slow = {"xvdb": DiskConfig("xvdb", "phy", 160)}, {"xvdb": ("xrslow-3-xvdb", "/dev/nullb0")}
    plain_run, put = xen.run, []

    def run(command, timeout_s=None, **_):
        if command == f"cat {run_dir}/guest.xl":
            dom0.append(command)
            return SimpleNamespace(ok=True, exit_status=0, stderr="", stdout=(
                'name = "xenrig-guest"\ndevice_model_args_hvm = [ "-chardev", '
                f'"socket,id=xragent,path={run_dir}/agent.sock,server=on,wait=off" ]\n'
                f'disk = [ "format=raw,vdev=xvda,access=rw,backendtype=phy,target={run_dir}/vbd-xvda.img" ]\n'))
        return plain_run(command, timeout_s)

    def xl(command, check=False, timeout_s=None):
        xen.xl_calls.append(command)
        return SimpleNamespace(ok=migrate_ok, exit_status=0 if migrate_ok else 1, stdout="",
                               stderr="" if migrate_ok else "migration sender: Target reports failure")
    xen.run, xen.xl = run, xl
    xen.ssh = SimpleNamespace(put=lambda local, remote: put.append((local.read_text(), remote)))
    return life, capture, xen, dom0, put


def test_migrate_gives_the_receiving_qemu_its_own_agent_socket_and_renames_it_after(tmp_path, monkeypatch):
    life, capture, xen, dom0, put = _migrating(tmp_path, monkeypatch)
    out = life.migrate(300)
    [(config, remote)] = put
    assert remote == "/run/xenrig/guests/xenrig-guest/guest-incoming.xl"
    assert "path=/run/xenrig/guests/xenrig-guest/agent-from-d3.sock," in config and "agent.sock" not in config
    assert config.splitlines()[-1] == (
        'disk = [ "format=raw,vdev=xvda,access=rw,backendtype=phy,target=/run/xenrig/guests/xenrig-guest/vbd-xvda.img", '
        '"format=raw,vdev=xvdb,access=rw,backendtype=phy,script=/run/xenrig/agent/slowhotplug.py,target=/dev/nullb0" ]')
    assert config.count("disk = [") == 1 and (tmp_path / "guest-incoming.xl").read_text() == config
    assert xen.xl_calls == ["migrate -s '' -C /run/xenrig/guests/xenrig-guest/guest-incoming.xl xenrig-guest "
                            "'xl migrate-receive'"]
    [rename] = [c for c in dom0 if "mv -f" in c]
    assert "agent-from-d3.sock /run/xenrig/guests/xenrig-guest/agent.sock" in rename and "!= 3 ]" in rename
    assert capture.drained == 1 and capture.names_before_resume == {8: "xvda/0"} and capture.rings_stale
    assert (out["old_domid"], out["new_domid"], out["connected"]) == (3, 7, True) and "migrate_s" in out


def test_a_failed_migration_is_an_error_with_xls_words_and_the_guest_left_where_it_was(tmp_path, monkeypatch):
    life, capture, xen, dom0, put = _migrating(tmp_path, monkeypatch, migrate_ok=False)
    with pytest.raises(InfraError, match="'xl migrate' of xenrig-guest failed .*Target reports failure"):
        life.migrate(300)
    assert capture.guest.domid == 3 and capture.names_before_resume is None
    assert "rm -f /run/xenrig/guests/xenrig-guest/guest-incoming.xl" in dom0[-1]


def test_migrate_refuses_a_config_that_does_not_name_the_agent_socket(tmp_path, monkeypatch):
    life, capture, xen, dom0, put = _migrating(tmp_path, monkeypatch)
    capture.guest.paths.agent_socket = "/elsewhere/agent.sock"
    with pytest.raises(InfraError, match="does not name the agent socket"):
        life.migrate(300)
    assert put == [] and xen.xl_calls == []


def test_migrate_refuses_while_a_vbd_whose_backend_never_connects_is_attached(tmp_path, monkeypatch):
    life, capture, xen, dom0, put = _migrating(tmp_path, monkeypatch)
    capture.stalled = ["xvdc"]
    with pytest.raises(InfraError, match="with xvdc attached: its backend never connects"):
        life.migrate(300)
    assert put == [] and xen.xl_calls == []
