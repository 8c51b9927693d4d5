"""The build-complete manifest shared by the data builders."""

from verl_ext.data.manifest import manifest_matches, write_manifest


def test_written_manifest_matches_its_payload_through_json(tmp_path):
    path = tmp_path / ".manifest.json"
    assert not manifest_matches(path, {"a": 1})  # missing
    write_manifest(path, {"tasks": ("count", "sum"), "n": 3})
    assert manifest_matches(path, {"n": 3, "tasks": ("count", "sum")})  # tuples compare as lists
    assert not manifest_matches(path, {"n": 4, "tasks": ("count", "sum")})
    assert not list(tmp_path.glob("*.tmp-*")), "the temp file is renamed, never left behind"
    path.write_text("{not json")
    assert not manifest_matches(path, {"n": 3})
