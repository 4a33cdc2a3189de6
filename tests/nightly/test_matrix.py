import pytest

from harness import config
from harness.errors import ConfigError
from harness.nightly import load_matrix
from harness.nightly.shard import Shard

from .conftest import REPO


def test_shipped_matrix_expands_to_stable_cells(matrix):
    ids = [c.id for c in matrix.cells]
    assert ids == sorted(ids)
    assert ids == [
        "blkfront-io/phy/default", "blkfront-io/phy/no-indirect", "blkfront-io/phy/no-persistent",
        "blkfront-io/phy/ring-order-4", "blkfront-io/phy/untrusted", "blkfront-io/qdisk/default",
        "blkfront-io/qdisk/ring-order-4", "blkfront-io/qdisk/untrusted",
        "blkfront-lifecycle/phy/default", "blkfront-lifecycle/phy/no-indirect",
        "blkfront-lifecycle/phy/no-persistent", "blkfront-lifecycle/phy/untrusted", "blkfront-lifecycle/qdisk/default",
        "blkfront-resume/phy/default", "blkfront-resume/phy/no-indirect", "blkfront-resume/phy/no-persistent",
        "blkfront-resume/phy/ring-order-4", "blkfront-resume/qdisk/default", "blkfront-resume/qdisk/ring-order-4",
        "blkfront-smp/phy/default", "blkfront-smp/phy/no-indirect", "blkfront-smp/phy/no-persistent",
        "blkfront-smp/phy/ring-order-0", "blkfront-smp/phy/ring-order-4", "blkfront-smp/phy/smp4",
        "blkfront-smp/qdisk/default", "blkfront-smp/qdisk/ring-order-0", "blkfront-smp/qdisk/ring-order-4",
        "blkfront-smp/qdisk/smp4",
        "gnttab-conformance/phy/default", "gnttab-conformance/qdisk/default",
        "smoke/phy/default", "smoke/phy/no-indirect", "smoke/phy/no-persistent", "smoke/phy/untrusted",
        "smoke/qdisk/default",
    ]
    assert len(matrix.excluded) == 48 and all(e["reason"] for e in matrix.excluded)
    assert matrix.scenarios == ["smoke", "gnttab-conformance", "blkfront-io", "blkfront-lifecycle", "blkfront-smp",
                                "blkfront-resume"]
    # Columns every cell of which is excluded are not in the grid.
    assert matrix.columns == ["phy/default", "phy/no-persistent", "phy/no-indirect", "phy/smp4", "phy/ring-order-0",
                              "phy/ring-order-4", "phy/untrusted", "qdisk/default", "qdisk/smp4", "qdisk/ring-order-0",
                              "qdisk/ring-order-4", "qdisk/untrusted"]
    # The trusted axis: blkfront's trusted=0, without persistent grants (which imply bouncing).
    untrusted = next(c for c in matrix.cells if c.id == "blkfront-io/phy/untrusted")
    assert untrusted.sets == ("guest.disks[*].backend=phy", "modules.blkfront.params.trusted=0",
                              "modules.blkfront.params.feature_persistent=0")
    # The vCPU axis sets the guest's vCPUs and blkfront's queues together.
    smp4 = next(c for c in matrix.cells if c.id == "blkfront-smp/phy/smp4")
    assert smp4.sets == ("guest.disks[*].backend=phy", "guest.vcpus=4", "modules.blkfront.params.max_queues=4")
    assert smp4.variant(config.load_scenario(smp4.scenario_path)).guest.vcpus == 4
    assert load_matrix(REPO / "configs" / "nightly.yaml").digest == matrix.digest


def test_variant_is_the_typed_scenario_changed_not_a_yaml_copy(matrix):
    cells = {c.id: c for c in matrix.cells}
    io = cells["blkfront-io/phy/no-persistent"]
    assert io.sets == ("guest.disks[*].backend=phy", "modules.blkfront.params.feature_persistent=0")
    original = config.load_scenario(io.scenario_path)
    variant = io.variant(original)
    # The set goes over the scenario's own parameters; the rest stay.
    assert variant.modules.blkfront.params == {"feature_persistent": "0", "max_indirect_segments": "32", "max_queues": "1"}
    assert original.modules.blkfront.params["feature_persistent"] == "1"      # the loaded object is untouched
    smoke = cells["smoke/qdisk/default"].variant(config.load_scenario(cells["smoke/qdisk/default"].scenario_path))
    assert [(d.vdev, d.backend) for d in smoke.guest.disks] == [("xvda", "qdisk"), ("xvdb", "qdisk")]
    assert smoke.modules.blkfront.params == {}


def test_same_cells_and_split_whatever_the_file_order(matrix_file):
    a = load_matrix(matrix_file("""
scenarios: [scenarios/smoke.yaml, scenarios/blkfront-io.yaml]
backends: [phy, qdisk]
param_sets: {default: {}, no-persistent: {feature_persistent: 0}}
"""))
    b = load_matrix(matrix_file("""
scenarios: [scenarios/blkfront-io.yaml, scenarios/smoke.yaml]
backends: [qdisk, phy]
param_sets: {no-persistent: {feature_persistent: 0}, default: {}}
"""))
    assert [c.id for c in a.cells] == [c.id for c in b.cells]
    assert a.digest == b.digest
    for i in (1, 2, 3):
        assert [c.id for c in Shard(i, 3).pick(a.cells)] == [c.id for c in Shard(i, 3).pick(b.cells)]
    # ... while the grid follows each file's own order.
    assert a.columns[0] == "phy/default" and b.columns[0] == "qdisk/no-persistent"


def test_a_changed_variant_changes_the_digest(matrix_file):
    a = load_matrix(matrix_file("scenarios: [scenarios/smoke.yaml]\nparam_sets: {x: {feature_persistent: 0}}\n"))
    b = load_matrix(matrix_file("scenarios: [scenarios/smoke.yaml]\nparam_sets: {x: {feature_persistent: 1}}\n"))
    assert [c.id for c in a.cells] == [c.id for c in b.cells] and a.digest != b.digest


@pytest.mark.parametrize("text,where,words", [
    ("scenarios: [scenarios/smoke.yaml]\nbackends: [phy, nbd]\n", ":2: key 'backends[1]'", "one of phy, qdisk"),
    ("scenarios: [scenarios/nope.yaml]\n", ":1: key 'scenarios'", "not a file"),
    ("scenarios: [scenarios/smoke.yaml]\nparam_sets: {a/b: {}}\n", ":2: key 'param_sets'", "not a usable name"),
    ("scenarios: [scenarios/smoke.yaml]\nparam_sets: {x: {feature-persistent: 0}}\n", ":2: key 'param_sets'",
     "not a module parameter name"),
    ("scenarios: [scenarios/smoke.yaml]\nparam_sets: {x: {vcpus: 0}}\n", ":2: key 'param_sets'",
     "vcpus must be a number from 1 to 64"),
    ("scenarios: [scenarios/smoke.yaml]\nretries: 9\n", ":2: key 'retries'", "between 0 and 3"),
    ("scenarios: [scenarios/smoke.yaml]\nexclude:\n  - {reason: nothing named}\n", ":3: key 'exclude[0].scenario'",
     "at least one of"),
    ("scenarios: [scenarios/smoke.yaml]\nexclude:\n  - {backend: phy}\n  - {scenario: smok}\n",
     ":4: key 'exclude[1].scenario'", "'smok' is not in the matrix"),
    ("scenarios: [scenarios/smoke.yaml]\nbackends: [phy]\nexclude:\n  - {backend: qdisk}\n",
     ":4: key 'exclude[0].backend'", "not in the matrix"),
    ("scenarios: [scenarios/smoke.yaml, scenarios/plain-smoke.yaml]\n", ":1: key 'scenarios'", "both named 'smoke'"),
    ("scenarios: [scenarios/smoke.yaml]\nbackends: [phy]\nexclude: [{scenario: smoke}]\n", "", "every combination is excluded"),
    ("scenarios: [scenarios/noblk.yaml]\nparam_sets: {default: {}, x: {feature_persistent: 0}}\n", "",
     "cell noblk/phy/x: "),
])
def test_matrix_errors_name_the_place(matrix_file, text, where, words):
    path = matrix_file(text)
    (path.parent / "scenarios" / "noblk.yaml").write_text("name: noblk\nmodules: {blkfront: {enabled: false}}\n")
    with pytest.raises(ConfigError) as err:
        load_matrix(path)
    msg = err.value.paragraph()
    assert str(path) in msg and where in msg and words in msg, msg


def test_excluded_cells_in_the_middle_of_the_grid(matrix):
    excluded = {e["id"] for e in matrix.excluded}
    assert "gnttab-conformance/phy/no-persistent" in excluded       # a hole in a kept column
    assert "phy/no-persistent" in matrix.columns
