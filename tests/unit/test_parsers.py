import pytest

from harness.checks import parsers

XL_DMESG = """(XEN) HVM: ASIDs enabled.
(XEN) SVM: Supported advanced features:
(XEN) HVM: SVM enabled
(XEN) HVM: Hardware Assisted Paging (HAP) detected
(XEN) HVM: HAP page sizes: 4kB, 2MB, 1GB
"""


def test_xen_hvm_status():
    st = parsers.xen_hvm_status(XL_DMESG)
    assert st.technology == "SVM" and st.hap and st.line == "(XEN) HVM: SVM enabled"
    st = parsers.xen_hvm_status("(XEN) HVM: VMX enabled\n")
    assert st.technology == "VMX" and not st.hap
    assert parsers.xen_hvm_status("(XEN) nothing").technology is None


def test_pci_ids():
    listing = "0000:00:00.0 0x8086 0x1237\n0000:00:02.0 0x5853 0x0001\nbogus\n"
    assert parsers.pci_ids(listing) == [("0000:00:00.0", "8086", "1237"), ("0000:00:02.0", "5853", "0001")]


def test_grant_table_version():
    assert parsers.grant_table_version("[ 7.3] xen:grant_table: Grant tables using version 1 layout") == 1
    assert parsers.grant_table_version("nothing") is None


def test_blkfront_features():
    line = ("[ 8.5] blkfront: xvda: flush diskcache: enabled; persistent grants: enabled; "
            "indirect descriptors: enabled; bounce buffer: enabled\n"
            "[ 8.4] blkfront: xvdb: flush diskcache: enabled; persistent grants: disabled; indirect descriptors: disabled; bounce buffer: disabled;")
    feats = parsers.blkfront_features(line)
    assert feats["xvda"]["persistent grants"] == "enabled"
    assert feats["xvdb"]["indirect descriptors"] == "disabled"


def test_vdev_numbers():
    assert parsers.vdev_number("xvda") == 51712
    assert parsers.vdev_number("xvdb") == 51728
    assert parsers.vdev_number("xvdp") == 51952
    # From the 17th disk on, libxl's extended form.
    assert parsers.vdev_number("xvdq") == (1 << 28) | (16 << 8)
    assert parsers.BACKEND_PATH.fullmatch(f"/local/domain/0/backend/xrvbd/3/{parsers.vdev_number('xvdz')}")
    assert parsers.vdev_number("xvdp") == 51712 + 15 * 16


@pytest.mark.parametrize("value,ok", [
    ("/local/domain/0/backend/vbd/3/51712", True),
    ("/local/domain/0/backend/qdisk/3/51728\n", True),
    ("/local/domain/0/backend/vbd/3/51712; reboot", False),
    ("$(reboot)", False),
    ("/local/domain/0/backend/vbd/3/../../../x", False),
    ("", False),
])
def test_a_backend_path_from_the_guests_xenstore_is_checked(value, ok):
    assert (parsers.backend_path(value) is not None) == ok
