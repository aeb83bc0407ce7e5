"""The Python module `tessera` (python/tessera_module.cpp) against tessera::Pipeline in C++.

ctest runs this as python.pytest after python.reference, whose program
(python/python_reference.cpp) writes a small model directory, its inputs and the embeddings
tessera::Pipeline<float> computes for them into $TESSERA_PYTHON_REFERENCE. Every embedding
here must equal the C++ one bit for bit (the same batches: the default batch size, the same
order). Run them with

    ctest --test-dir build/<preset> -R python
"""

import json
import os
import pathlib
import struct
import threading

import numpy as np
import pytest

import tessera


def _reference_dir():
    where = os.environ.get("TESSERA_PYTHON_REFERENCE")
    if not where:
        raise RuntimeError(
            "TESSERA_PYTHON_REFERENCE is not set: run these tests through ctest "
            "(ctest -R python), which writes the reference first")
    return pathlib.Path(where)


def read_safetensors(path):
    """The tensors of a safetensors file as numpy arrays (F32 and I64 are all it holds)."""
    data = path.read_bytes()
    (header_size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + header_size])
    dtypes = {"F32": np.float32, "I64": np.int64}
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        raw = data[8 + header_size + begin:8 + header_size + end]
        out[name] = np.frombuffer(raw, dtype=dtypes[info["dtype"]]).reshape(info["shape"])
    return out


@pytest.fixture(scope="module")
def reference():
    root = _reference_dir()
    inputs = json.loads((root / "inputs.json").read_text())
    expected = read_safetensors(root / "expected.safetensors")
    return inputs, expected


@pytest.fixture(scope="module")
def model(reference):
    inputs, _ = reference
    return tessera.load(inputs["model"])


def assert_same_bits(actual, expected):
    assert actual.dtype == np.float32
    assert actual.shape == expected.shape
    assert np.array_equal(actual, expected), (
        f"largest difference {np.abs(actual - expected).max()}")


def test_each_modality_list_equals_the_cpp_pipeline(model, reference):
    inputs, expected = reference
    assert_same_bits(model.encode_texts(inputs["texts"]), expected["texts"])
    assert_same_bits(model.encode_images(inputs["images"]), expected["images"])
    assert_same_bits(model.encode_audio(inputs["audio"]), expected["audio"])
    assert_same_bits(model.encode_videos(inputs["videos"]), expected["videos"])
    # paths as pathlib.Path work too
    paths = [pathlib.Path(p) for p in inputs["images"]]
    assert_same_bits(model.encode_images(paths), expected["images"])


def test_mixed_dicts_equal_the_cpp_pipeline(model, reference):
    inputs, expected = reference
    assert_same_bits(model.encode(inputs["mixed"]), expected["mixed"])


@pytest.mark.parametrize("dtype", ["int8", "bf16"])
def test_quantized_model_loads_and_equals_the_cpp_pipeline(reference, dtype):
    inputs, expected = reference
    quantized = tessera.load(str(pathlib.Path(inputs["model"]).parent / f"model-{dtype}"))
    got = quantized.encode(inputs["mixed"])
    assert_same_bits(got, expected[f"{dtype}.mixed"])
    # close to the fp32 model's, not equal: the weights are rounded
    cosines = np.sum(got * expected["mixed"], axis=1)
    assert np.all(cosines > 0.99) and np.any(got != expected["mixed"])


def test_preprocessed_arrays_equal_the_cpp_pipeline(model, reference):
    inputs, expected = reference
    samples = [
        {"text_ids": expected["pre.text_ids"], "image": expected["pre.image"]},
        {"audio": expected["pre.audio"]},
        {"video": expected["pre.video"]},
    ]
    assert_same_bits(model.encode(samples), expected["preprocessed"])
    # the front ends made those arrays from these files: the same bits from the files
    assert_same_bits(model.encode(inputs["preprocessed_sources"]), expected["preprocessed"])
    # arrays and files mix in one sample; ids may be a list
    mixed = [
        {"text_ids": expected["pre.text_ids"].tolist(),
         "image": inputs["preprocessed_sources"][0]["image"]},
        {"audio": inputs["preprocessed_sources"][1]["audio"]},
        {"video": expected["pre.video"]},
    ]
    assert_same_bits(model.encode(mixed), expected["preprocessed"])


def test_results_own_their_memory(model, reference):
    inputs, _ = reference
    out = model.encode_texts(inputs["texts"])
    assert out.flags["C_CONTIGUOUS"] and out.flags["OWNDATA"] is False  # the matrix, not a copy
    assert out.base is not None
    norms = np.linalg.norm(out, axis=1)
    assert np.allclose(norms, 1.0, atol=1e-5)
    del out  # frees the matrix; nothing else refers to it
    empty = model.encode_texts([])
    assert empty.shape == (0, model.embed_dim) and empty.dtype == np.float32


def test_config_reads_as_a_dict(model, reference):
    inputs, _ = reference
    config = model.config
    on_disk = json.loads((pathlib.Path(inputs["model"]) / "config.json").read_text())
    assert config == on_disk
    assert config["embed_dim"] == model.embed_dim == 16
    assert model.modalities == ["text", "image", "audio", "video"]
    assert model.batch_size == 32


def test_bad_input_raises_tessera_error_naming_the_file(model, reference, tmp_path):
    inputs, _ = reference
    assert issubclass(tessera.Error, RuntimeError)
    missing = str(tmp_path / "no-such-image.png")
    with pytest.raises(tessera.Error, match="sample 2") as error:
        model.encode_images(inputs["images"][:2] + [missing])
    assert missing in str(error.value)

    with pytest.raises(tessera.Error, match="sample 1: the model has no point_cloud modality"):
        model.encode([{"text": "a red square"}, {"point_cloud": "cloud.xyz"}])
    with pytest.raises(tessera.Error, match=r"sample 0: image: expected an array \[C, S, S\], got 2"):
        model.encode([{"image": np.zeros((32, 32), np.float32)}])
    with pytest.raises(tessera.Error, match="sample 0: image has shape"):
        model.encode([{"image": np.zeros((3, 16, 16), np.float32)}])
    with pytest.raises(tessera.Error, match="text id 300"):
        model.encode([{"text_ids": np.array([1, 300])}])
    with pytest.raises(tessera.Error, match="integer token ids"):
        model.encode([{"text_ids": np.array([1.0, 2.0])}])
    with pytest.raises(tessera.Error, match="not both"):
        model.encode([{"text": "a", "text_ids": [1]}])
    with pytest.raises(tessera.Error, match="expected a dict"):
        model.encode(["a red square"])
    with pytest.raises(tessera.Error, match="load_model: .*not a directory"):
        tessera.load(tmp_path / "no-model")


def test_threads_encode_at_once_with_the_serial_results(model, reference):
    inputs, expected = reference
    jobs = [
        lambda: model.encode_texts(inputs["texts"]),
        lambda: model.encode_images(inputs["images"]),
        lambda: model.encode(inputs["mixed"]),
        lambda: model.encode_videos(inputs["videos"]),
    ]
    serial = [job() for job in jobs]
    rounds = 3
    results = [[None] * rounds for _ in jobs]
    errors = []

    def run(j):
        try:
            for r in range(rounds):
                results[j][r] = jobs[j]()
        except Exception as e:  # reported after the join
            errors.append(e)

    threads = [threading.Thread(target=run, args=(j,)) for j in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for j, rounds_of_job in enumerate(results):
        for out in rounds_of_job:
            assert_same_bits(out, serial[j])
    assert_same_bits(serial[0], expected["texts"])


def test_batch_size_and_threads_options(reference):
    inputs, expected = reference
    # the same batches (32) with one decoding thread: the same bits
    one_thread = tessera.load(inputs["model"], threads=1)
    assert_same_bits(one_thread.encode(inputs["mixed"]), expected["mixed"])
    # other batches: the same to rounding (docs/pipeline.md)
    small = tessera.load(inputs["model"], batch_size=2)
    assert np.allclose(small.encode(inputs["mixed"]), expected["mixed"], rtol=0, atol=1e-6)
    with pytest.raises(tessera.Error, match="batch_size"):
        tessera.load(inputs["model"], batch_size=0)


# ---- Pretrained models, zero-shot classification and search (search_index.hpp) ------------
# On the ImageBind fixture (text, image, audio and video towers, E 16) copied with the CLIP
# tokenizer into a temporary directory, so raw text works.

SOURCE = pathlib.Path(__file__).resolve().parents[2]
PROBABILITY_SUM_TOLERANCE = 1e-5  # float32 softmax rows of a few labels
SCORE_TOLERANCE = 1e-4  # float32 cosines of unit embeddings, batches of other sizes


@pytest.fixture(scope="module")
def imagebind_dir(tmp_path_factory):
    import shutil
    out = tmp_path_factory.mktemp("imagebind") / "model"
    shutil.copytree(SOURCE / "tests/data/pretrained/imagebind/model", out)
    shutil.copy(SOURCE / "tests/data/text/clip_tokenizer/bpe_simple_vocab_16e6.txt.gz", out)
    return out


@pytest.fixture(scope="module")
def imagebind(imagebind_dir):
    return tessera.load(imagebind_dir)


def softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_pretrained_model_config_and_modalities(imagebind, imagebind_dir):
    assert imagebind.is_pretrained
    assert imagebind.modalities == ["text", "image", "audio", "video"]
    config = imagebind.config
    assert config["family"] == "imagebind"
    assert config["embed_dim"] == imagebind.embed_dim == 16
    on_disk = json.loads((imagebind_dir / "config.json").read_text())
    assert config["towers"]["image"]["width"] == on_disk["vision_embed_dim"]
    assert config["towers"]["audio"]["layers"] == on_disk["audio_num_blocks"]
    assert config["towers"]["text"]["vocab_size"] == 49408
    assert config["video"] == {"tower": "image", "clip_frames": 2}
    assert config["model_type"] == "tessera_towers"  # the native form, tessera::to_json
    assert config["towers"]["image"]["clip_frames"] == 2
    assert config["logit_scale"] == pytest.approx(imagebind.logit_scale)
    assert imagebind.model_dir == imagebind_dir


def test_classify_is_softmax_of_scaled_cosines(imagebind, reference):
    inputs, _ = reference
    images = inputs["images"][:2]
    audio = inputs["audio"][:1]
    labels = ["red square", "blue circle", "a rising tone"]
    p = imagebind.classify(images + audio, labels, template="a picture of a {}")
    assert p.shape == (3, 3) and p.dtype == np.float32
    assert np.allclose(p.sum(axis=1), 1, atol=PROBABILITY_SUM_TOLERANCE)
    x = np.concatenate([imagebind.encode_images(images), imagebind.encode_audio(audio)])
    t = imagebind.encode_texts([f"a picture of a {label}" for label in labels])
    expected = softmax(np.exp(np.float64(imagebind.logit_scale)) * (x @ t.T).astype(np.float64))
    assert np.allclose(p, expected, atol=1e-5)
    # labels as one comma-separated string, trimmed; dicts as encode takes; the default template
    same = imagebind.classify([{"image": images[0]}, images[1], audio[0]],
                              " red square,blue circle , a rising tone ", template="a picture of a {}")
    assert np.allclose(same, p, atol=1e-6)
    default = imagebind.classify(images[:1], labels)
    t = imagebind.encode_texts([f"a photo of a {label}." for label in labels])
    x = imagebind.encode_images(images[:1])
    assert np.allclose(default, softmax(np.exp(imagebind.logit_scale) * (x @ t.T)), atol=1e-5)


def test_classify_refuses_bad_labels_and_templates(imagebind, reference, tmp_path):
    inputs, _ = reference
    image = inputs["images"][:1]
    with pytest.raises(tessera.Error, match=r'template "a photo" has no "\{\}"'):
        imagebind.classify(image, ["dog", "cat"], template="a photo")
    with pytest.raises(tessera.Error, match="label 2 of 3 is empty"):
        imagebind.classify(image, ["dog", "  ", "cat"])
    with pytest.raises(tessera.Error, match='"dog" is given twice'):
        imagebind.classify(image, "dog, cat,dog")
    with pytest.raises(tessera.Error, match="labels: none given"):
        imagebind.classify(image, [])
    with pytest.raises(tessera.Error, match="not a kind of file"):
        imagebind.classify([str(tmp_path / "notes.txt")], ["dog", "cat"])
    with pytest.raises(tessera.Error, match="no-such.png"):
        imagebind.classify([str(tmp_path / "no-such.png")], ["dog", "cat"])


def test_classify_with_a_tessera_model(model, reference):
    inputs, _ = reference
    p = model.classify(inputs["images"], ["red square", "blue circle"])
    assert p.shape == (len(inputs["images"]), 2)
    assert np.allclose(p.sum(axis=1), 1, atol=PROBABILITY_SUM_TOLERANCE)


def test_search_builds_reuses_and_updates_the_index(imagebind, reference, tmp_path):
    import shutil
    inputs, _ = reference
    folder = tmp_path / "files"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(inputs["images"][0], folder / "a.png")
    shutil.copy(inputs["images"][2], folder / "sub" / "b.png")
    shutil.copy(inputs["audio"][0], folder / "c.wav")
    (folder / "broken.png").write_bytes(b"not an image")
    (folder / "notes.txt").write_text("not indexed")

    first = imagebind.update_index(folder)
    assert first["index_file"] == str(folder / ".tessera-index.safetensors")
    assert (first["files"], first["embedded"], first["reused"], first["failed"]) == (3, 3, 0, 1)
    assert first["skipped"] == 1 and first["written"]
    assert first["failures"][0][0] == "broken.png" and "unsupported image format" in first["failures"][0][1]

    again = imagebind.update_index(folder)
    assert (again["reused"], again["embedded"], again["failed_before"], again["written"]) == (3, 0, 1, False)

    stat = (folder / "sub" / "b.png").stat()
    os.utime(folder / "sub" / "b.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    (folder / "c.wav").unlink()
    updated = imagebind.update_index(folder)
    assert (updated["files"], updated["reused"], updated["embedded"], updated["dropped"]) == (2, 1, 1, 1)

    hits = imagebind.search(folder, query_file=folder / "a.png", top=5)
    assert [h["path"] for h in hits][0] == "a.png"
    assert hits[0]["score"] == pytest.approx(1, abs=SCORE_TOLERANCE)
    assert {h["path"] for h in hits} == {"a.png", "sub/b.png"}
    assert all(h["modality"] == "image" for h in hits)
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True)

    text_hits = imagebind.search(folder, "a red square", top=1)
    expected = imagebind.encode_images([folder / "a.png", folder / "sub" / "b.png"]) @ \
        imagebind.encode_texts(["a red square"])[0]
    assert text_hits[0]["path"] == ["a.png", "sub/b.png"][int(np.argmax(expected))]
    assert text_hits[0]["score"] == pytest.approx(float(expected.max()), abs=SCORE_TOLERANCE)

    # another index file; errors
    elsewhere = tmp_path / "elsewhere.safetensors"
    assert imagebind.update_index(folder, index_file=elsewhere)["embedded"] == 2
    assert elsewhere.exists()
    with pytest.raises(tessera.Error, match="no such directory"):
        imagebind.search(tmp_path / "no-such-folder", "a dog")
    with pytest.raises(tessera.Error, match="not both"):
        imagebind.search(folder, "a dog", query_file=folder / "a.png")
    with pytest.raises(tessera.Error, match="more than 1 files to index"):
        imagebind.update_index(folder, index_file=tmp_path / "small.safetensors", max_files=1)
    (tmp_path / "not-an-index.safetensors").write_text("hello")
    with pytest.raises(tessera.Error, match="is not a tessera search index"):
        imagebind.update_index(folder, index_file=tmp_path / "not-an-index.safetensors")
    assert (tmp_path / "not-an-index.safetensors").read_text() == "hello"  # left as it was
