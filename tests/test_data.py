"""Tests for asdlib.data: clip names, scanning with its errors, manifest, anomaly kinds."""

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from asdlib.data import (CLIP_TABLE_COLUMNS, MANIFEST_COLUMNS, ClipName, DatasetError,
                         ManifestMismatch, attribute_pairs, build_manifest, normalize_attributes,
                         parse_clip_name, read_anomaly_kinds, read_manifest, scan_dataset,
                         scan_machine, verify_manifest, write_manifest)

TRAIN = ["section_00_source_train_normal_0000_spd_1.wav",
         "section_00_source_train_normal_0001_spd_2.wav",
         "section_00_target_train_normal_0000_spd_3.wav"]
TEST = ["section_00_source_test_normal_0000_spd_1.wav",
        "section_00_source_test_anomaly_0000_spd_1.wav",
        "section_00_target_test_normal_0000_spd_3.wav",
        "section_00_target_test_anomaly_0000_spd_3.wav"]


def write_wav(path, n=160, channels=2):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros((n, channels)), 16000, subtype="PCM_16")


def make_machine(root, machine, dataset="dev", train=TRAIN, test=TEST):
    machine_dir = root / f"{dataset}_data" / "raw" / machine
    for name in train:
        write_wav(machine_dir / "train" / name)
    for name in test:
        write_wav(machine_dir / "test" / name)
    return machine_dir


# ----------------------------------------------------------------- names

def test_parse_dev_train_name_with_attributes():
    clip = parse_clip_name("section_00_source_train_normal_0007_car_B1_spd_2_mic_2_mic_1.wav")
    assert clip == ClipName("00", "source", "train", "normal", 7, "car_B1_spd_2_mic_2_mic_1",
                            "section_00_source_train_normal_0007_car_B1_spd_2_mic_2_mic_1.wav")
    assert clip.is_labeled and not clip.attributes_hidden
    assert clip.attribute_pairs() == [("car", "B1"), ("spd", "2"), ("mic", "2"), ("mic", "1")]


def test_parse_test_anomaly_name_and_directory_ignored():
    clip = parse_clip_name("some/dir/section_00_target_test_anomaly_0012_pro_A.wav")
    assert (clip.section, clip.domain, clip.split, clip.label, clip.index, clip.attributes) == \
        ("00", "target", "test", "anomaly", 12, "pro_A")


def test_parse_names_without_attributes():
    clip = parse_clip_name("section_00_source_train_normal_0000.wav")
    assert clip.attributes == "" and clip.attributes_hidden and clip.index == 0
    hidden = parse_clip_name("section_00_source_train_normal_0000_noAttribute.wav")
    assert hidden.attributes == "noAttribute" and hidden.attributes_hidden
    assert hidden.attribute_pairs() == []


def test_parse_eval_test_name_has_no_domain_or_label():
    clip = parse_clip_name("section_00_0199.wav")
    assert clip.domain is None and clip.split is None and clip.label is None
    assert clip.index == 199 and clip.attributes == "" and not clip.is_labeled


def test_parse_name_without_extension_as_in_evaluator_files():
    assert parse_clip_name("section_00_target_test_anomaly_0001_mdl_B_spd_2").attributes == \
        "mdl_B_spd_2"


def test_attribute_helpers_and_case_quirk():
    assert attribute_pairs("pro_A") == [("pro", "A")]
    assert attribute_pairs("") == [] and attribute_pairs("noAttribute") == []
    assert normalize_attributes("pro_Y") == normalize_attributes("pro_y") == "pro_y"
    clip = parse_clip_name("section_00_source_train_normal_0000_pro_Y.wav")
    assert clip.attributes == "pro_Y" and clip.normalized_attributes == "pro_y"
    with pytest.raises(DatasetError, match="pairs"):
        attribute_pairs("spd_1_mic")


@pytest.mark.parametrize("name, problem", [
    ("section_00_source_train_normal_0000.flac", "not a .wav"),
    ("sec_00_source_train_normal_0000.wav", "start with 'section_'"),
    ("section_0_source_train_normal_0000.wav", "two digits"),
    ("section_00.wav", "nothing after"),
    ("section_00_left_train_normal_0000.wav", "domain"),
    ("section_00_source_valid_normal_0000.wav", "split"),
    ("section_00_source_test_0000_spd_1.wav", "label missing"),
    ("section_00_source_test_broken_0000.wav", "label"),
    ("section_00_source_test_normal_abcd.wav", "index"),
    ("section_00_source_test_normal.wav", "index"),
    ("section_00_source_test_normal_0000_spd__1.wav", "empty part"),
    ("section_00_source_test_normal_0000_.wav", "empty part"),
    ("section_00_0000_spd_1.wav", "no further parts"),
    ("Section_00_source_train_normal_0000.wav", "section_"),
])
def test_bad_names_raise_naming_file_and_problem(name, problem):
    with pytest.raises(DatasetError, match=problem) as info:
        parse_clip_name(name)
    assert name in str(info.value)
    assert isinstance(info.value, ValueError)


# ----------------------------------------------------------------- scanning

def test_scan_dataset_columns_order_and_values(tmp_path):
    make_machine(tmp_path, "fan")
    make_machine(tmp_path, "ToyCar")
    table = scan_dataset(tmp_path)
    assert list(table.columns) == CLIP_TABLE_COLUMNS
    assert len(table) == 14
    assert table["machine"].tolist() == ["ToyCar"] * 7 + ["fan"] * 7
    fan = table[table["machine"] == "fan"]
    assert fan["split"].tolist() == ["train"] * 3 + ["test"] * 4
    assert fan["name"].tolist() == sorted(TRAIN) + sorted(TEST)
    first = fan.iloc[0]
    assert first["path"] == str(tmp_path / "dev_data/raw/fan/train" / first["name"])
    assert (first["section"], first["domain"], first["label"], first["index"],
            first["attributes"], first["dataset"]) == ("00", "source", "normal", 0, "spd_1", "dev")
    assert table["index"].dtype.kind == "i"
    # deterministic: the same table again
    pd.testing.assert_frame_equal(table, scan_dataset(tmp_path))


def test_scan_eval_with_unlabeled_test_names(tmp_path):
    make_machine(tmp_path, "Sander", dataset="eval",
                 test=["section_00_0001.wav", "section_00_0000.wav"])
    table = scan_dataset(tmp_path, datasets=("eval",))
    test = table[table["split"] == "test"]
    assert test["name"].tolist() == ["section_00_0000.wav", "section_00_0001.wav"]
    assert test["domain"].isna().all() and test["label"].isna().all()
    assert (table["dataset"] == "eval").all()


def test_scan_eval_train_only_when_asked(tmp_path):
    make_machine(tmp_path, "Sander", dataset="eval", test=[])
    with pytest.raises(DatasetError, match="missing 'test' folder"):
        scan_dataset(tmp_path, datasets=("eval",))
    table = scan_dataset(tmp_path, datasets=("eval",), splits=("train",))
    assert (table["split"] == "train").all() and len(table) == 3


def test_attributes_csv_is_joined_and_lenient_on_columns(tmp_path):
    machine_dir = make_machine(tmp_path, "fan", train=TRAIN[:2], test=TEST[:2])
    (machine_dir / "attributes_00.csv").write_text(
        "file_name,d1p,d1v,d2p,d2v\n"
        f"fan/train/{TRAIN[0]},spd,1,,\n"
        f"fan/train/{TRAIN[1]},spd,2,,\n"
        f"fan/test/{TEST[0]},spd,1,,\n")
    table = scan_machine(machine_dir)
    assert [c for c in table.columns if c.startswith("attr_")] == \
        ["attr_d1p", "attr_d1v", "attr_d2p", "attr_d2v"]
    row = table[table["name"] == TRAIN[1]].iloc[0]
    assert (row["attr_d1p"], row["attr_d1v"], row["attr_d2p"]) == ("spd", "2", "")
    assert table[table["name"] == TEST[1]]["attr_d1p"].isna().all()  # not listed in the csv


def test_attributes_csv_disagreeing_with_names_is_an_error(tmp_path):
    machine_dir = make_machine(tmp_path, "fan", train=TRAIN[:1], test=TEST[:1])
    (machine_dir / "attributes_00.csv").write_text(
        f"file_name,d1p,d1v\nfan/train/{TRAIN[0]},spd,9\n")
    with pytest.raises(DatasetError, match="in the csv but 'spd_1'"):
        scan_machine(machine_dir)


def test_attributes_csv_listing_a_missing_wav_is_an_error(tmp_path):
    machine_dir = make_machine(tmp_path, "fan", train=TRAIN[:1], test=TEST[:1])
    (machine_dir / "attributes_00.csv").write_text(
        f"file_name,d1p,d1v\nfan/train/{TRAIN[0]},spd,1\nfan/test/{TEST[1]},spd,1\n")
    with pytest.raises(DatasetError, match="not on disk"):
        scan_machine(machine_dir)


def test_attributes_csv_hidden_in_names_and_case_quirk_accepted(tmp_path):
    machine_dir = make_machine(
        tmp_path, "fan", train=["section_00_source_train_normal_0000_noAttribute.wav",
                                "section_00_source_train_normal_0001_pro_y.wav"],
        test=TEST[:1])
    (machine_dir / "attributes_00.csv").write_text(
        "file_name,d1p,d1v\n"
        "fan/train/section_00_source_train_normal_0000_noAttribute.wav,pro,A\n"
        "fan/train/section_00_source_train_normal_0001_pro_y.wav,pro,Y\n")
    table = scan_machine(machine_dir)
    assert table.loc[table["index"].eq(0) & table["split"].eq("train"), "attr_d1v"].item() == "A"


def test_root_missing(tmp_path):
    with pytest.raises(DatasetError, match="root does not exist"):
        scan_dataset(tmp_path / "nowhere")


def test_dataset_folder_missing(tmp_path):
    make_machine(tmp_path, "fan")
    with pytest.raises(DatasetError, match="no eval data folder"):
        scan_dataset(tmp_path, datasets=("dev", "eval"))


def test_unknown_machine_lists_what_exists(tmp_path):
    make_machine(tmp_path, "fan")
    make_machine(tmp_path, "valveEmu")
    with pytest.raises(DatasetError, match=r"\['pump'\].*fan, valveEmu"):
        scan_dataset(tmp_path, machines=["fan", "pump"])
    assert set(scan_dataset(tmp_path, machines=["fan"])["machine"]) == {"fan"}


def test_empty_machine_folder(tmp_path):
    (tmp_path / "dev_data/raw/fan").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"fan: machine folder is empty"):
        scan_dataset(tmp_path)


def test_missing_train_folder(tmp_path):
    make_machine(tmp_path, "fan", train=[])
    with pytest.raises(DatasetError, match=r"train: missing 'train' folder"):
        scan_dataset(tmp_path)


def test_split_folder_without_wavs(tmp_path):
    machine_dir = make_machine(tmp_path, "fan", test=[])
    (machine_dir / "test").mkdir()
    with pytest.raises(DatasetError, match=r"test: no wav files"):
        scan_machine(machine_dir)


def test_duplicate_names_up_to_case(tmp_path):
    machine_dir = make_machine(tmp_path, "fan", train=TRAIN + [
        "section_00_source_train_normal_0000_SPD_1.wav"])
    with pytest.raises(DatasetError, match="duplicated clip names"):
        scan_machine(machine_dir)


def test_same_name_in_the_other_split_folder(tmp_path):
    machine_dir = make_machine(tmp_path, "fan", test=TEST + [TRAIN[0]])
    with pytest.raises(DatasetError, match=r"name says split 'train' but the file is in 'test/'"):
        scan_machine(machine_dir)


def test_dev_test_files_without_labels(tmp_path):
    machine_dir = make_machine(tmp_path, "fan", test=["section_00_0000.wav",
                                                      "section_00_0001.wav"])
    with pytest.raises(DatasetError, match="no normal/anomaly label"):
        scan_machine(machine_dir)
    table = scan_machine(machine_dir, require_labels=False)
    assert table.loc[table["split"] == "test", "label"].isna().all()


def test_test_folder_mixing_labelled_and_unlabeled(tmp_path):
    machine_dir = make_machine(tmp_path, "fan", test=TEST + ["section_00_0000.wav"])
    with pytest.raises(DatasetError, match="mixes 4 labelled and 1 unlabeled"):
        scan_machine(machine_dir, require_labels=False)


def test_train_clip_labelled_anomaly(tmp_path):
    machine_dir = make_machine(tmp_path, "fan", train=[
        "section_00_source_train_anomaly_0000.wav"])
    with pytest.raises(DatasetError, match="training clips must be named"):
        scan_machine(machine_dir)


def test_bad_name_inside_a_folder(tmp_path):
    machine_dir = make_machine(tmp_path, "fan", test=TEST + ["recording_01.wav"])
    with pytest.raises(DatasetError, match=r"recording_01\.wav: bad clip name"):
        scan_machine(machine_dir)


def test_stray_wav_and_non_wav_files(tmp_path):
    machine_dir = make_machine(tmp_path, "fan")
    write_wav(machine_dir / "train" / "extra" / TRAIN[0])
    with pytest.raises(DatasetError, match="outside train/ and test/"):
        scan_machine(machine_dir)
    (machine_dir / "train" / "extra" / TRAIN[0]).unlink()
    (machine_dir / "train" / "extra").rmdir()
    (machine_dir / "test" / "notes.txt").write_text("hi")
    with pytest.raises(DatasetError, match=r"not \.wav.*notes\.txt"):
        scan_machine(machine_dir)


# ----------------------------------------------------------------- manifest

def test_manifest_build_write_read_roundtrip(tmp_path):
    root = tmp_path / "data"
    make_machine(root, "fan")
    manifest = build_manifest(scan_dataset(root), root)
    assert list(manifest.columns) == MANIFEST_COLUMNS
    assert manifest["path"].iloc[0].startswith("dev_data/raw/fan/")
    assert set(manifest["channels"]) == {2} and set(manifest["sample_rate"]) == {16000}
    assert set(manifest["samples"]) == {160}
    assert manifest["sha256"].str.len().eq(64).all()
    out = tmp_path / "manifest.csv"
    write_manifest(manifest, out)
    first_bytes = out.read_bytes()
    write_manifest(read_manifest(out), out)
    assert out.read_bytes() == first_bytes  # stable formatting
    pd.testing.assert_frame_equal(read_manifest(out), manifest)
    assert not list(tmp_path.glob("*.tmp"))
    assert verify_manifest(root, out) == []


def test_manifest_without_probe_and_with_unlabeled_rows(tmp_path):
    root = tmp_path / "data"
    make_machine(root, "Sander", dataset="eval", test=["section_00_0000.wav"])
    manifest = build_manifest(scan_dataset(root, datasets="eval"), root, probe_audio=False)
    assert manifest["channels"].isna().all()
    write_manifest(manifest, tmp_path / "m.csv")
    back = read_manifest(tmp_path / "m.csv")
    assert back.loc[back["split"] == "test", "domain"].isna().all()
    pd.testing.assert_frame_equal(back, manifest)


def test_verify_manifest_detects_changed_byte_missing_and_extra(tmp_path):
    root = tmp_path / "data"
    machine_dir = make_machine(root, "fan")
    out = tmp_path / "manifest.csv"
    write_manifest(build_manifest(scan_dataset(root), root), out)

    changed = machine_dir / "test" / TEST[0]
    raw = bytearray(changed.read_bytes())
    raw[-1] ^= 0xFF
    changed.write_bytes(bytes(raw))
    (machine_dir / "train" / TRAIN[1]).unlink()
    write_wav(machine_dir / "train" / "section_00_source_train_normal_0009.wav")

    problems = verify_manifest(root, out, raise_on_mismatch=False)
    assert problems == [
        f"missing: dev_data/raw/fan/train/{TRAIN[1]}",
        "extra: dev_data/raw/fan/train/section_00_source_train_normal_0009.wav",
        problems[2],
    ]
    assert problems[2].startswith(f"hash differs: dev_data/raw/fan/test/{TEST[0]}")
    with pytest.raises(ManifestMismatch, match=TRAIN[1]) as info:
        verify_manifest(root, out)
    assert info.value.problems == problems


def test_build_manifest_rejects_a_truncated_clip(tmp_path):
    root = tmp_path / "data"
    machine_dir = make_machine(root, "fan")
    table = scan_dataset(root)
    cut = machine_dir / "train" / TRAIN[0]
    cut.write_bytes(cut.read_bytes()[:100])
    with pytest.raises(DatasetError, match="(?s)1 of .* clip.*truncated"):
        build_manifest(table, root)


def test_build_manifest_reports_every_bad_clip_at_once(tmp_path):
    root = tmp_path / "data"
    machine_dir = make_machine(root, "fan")
    table = scan_dataset(root)
    bad = [machine_dir / "train" / TRAIN[0], machine_dir / "train" / TRAIN[1]]
    bad[0].write_bytes(bad[0].read_bytes()[:100])
    bad[1].write_bytes(b"RIFF not really a wav")
    with pytest.raises(DatasetError) as err:
        build_manifest(table, root)
    message = str(err.value)
    assert message.startswith("2 of ")
    assert all(p.name in message for p in bad)


def test_read_manifest_missing_file(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        read_manifest(tmp_path / "none.csv")


# ----------------------------------------------------------------- anomaly kinds

def test_read_anomaly_kinds(tmp_path):
    machine_dir = make_machine(tmp_path, "fan")
    assert read_anomaly_kinds(tmp_path, "fan").empty
    (machine_dir / "ground_truth_kinds.csv").write_text(
        f"name,kind\n{TEST[1]},click\n{TEST[3]},hum\n")
    kinds = read_anomaly_kinds(tmp_path, "fan")
    assert kinds.to_dict() == {TEST[1]: "click", TEST[3]: "hum"}
    assert len(scan_machine(machine_dir)) == 7  # the side file does not disturb scanning
