from harness.machine import accel


def fake_root(tmp_path, flags, modules):
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "kvm").write_text("")
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "cpuinfo").write_text(f"processor : 0\nflags : fpu {flags}\n")
    for name, nested in modules.items():
        d = tmp_path / "sys" / "module" / name / "parameters"
        d.mkdir(parents=True)
        if nested is not None:
            (d / "nested").write_text(nested + "\n")
    return tmp_path


def test_pvm_kvm_is_not_usable(tmp_path):
    rep = accel.probe(fake_root(tmp_path, "sse2", {"kvm": None, "kvm_pvm": None}))
    assert not rep.usable_kvm and "kvm_pvm" in rep.reason
    assert accel.choose("auto", rep) == "tcg"


def test_nested_kvm_amd_is_usable(tmp_path):
    rep = accel.probe(fake_root(tmp_path, "svm npt", {"kvm_amd": "1"}))
    assert rep.usable_kvm
    assert accel.choose("auto", rep) == "kvm"


def test_kvm_intel_without_nested(tmp_path):
    rep = accel.probe(fake_root(tmp_path, "vmx", {"kvm_intel": "N"}))
    assert not rep.usable_kvm


def test_explicit_setting_wins(tmp_path):
    rep = accel.probe(fake_root(tmp_path, "", {}))
    assert accel.choose("kvm", rep) == "kvm" and accel.choose("tcg", rep) == "tcg"


def test_no_dev_kvm(tmp_path):
    assert not accel.probe(tmp_path).usable_kvm
