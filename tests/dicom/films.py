"""DICOM films for tests/dicom.rs, made with pydicom, and the check of what prep made of them.

  films.py parity OUT       synthetic DX/CR films + pydicom's own test files (shipped in the wheel)
  films.py hostile OUT      radiographs with broken, oversized, non-image and CT objects among them
  films.py rsna OUT N       an RSNA-shaped dataset of N patients (class table, one row per box)
  films.py pipeline OUT N   OUT/healthy and OUT/diseased: N 128x128 films each, 2 per patient, in
                            every decoded compressed syntax, for the later stages
  films.py check BAG FILMS [C,W]  decode each film with pydicom, compare with the bag's PNGs

Every film is written with Modality, ViewPosition and planted PHI (patient name, id, birth date,
accession, institution) so tests can look for it in the bag. Expected outcomes go to OUT/cases.json.
Nothing is downloaded: pydicom.data.get_testdata_file is only used for files inside the wheel.
"""

import csv
import io
import json
import os
import shutil
import sys

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.sequence import Sequence
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
    generate_uid,
)

PHI = {
    "PatientName": "Zyxwort^Quillamina",
    "PatientID": "MRN-99887766",
    "PatientBirthDate": "19230417",
    "AccessionNumber": "ACC5550123",
    "InstitutionName": "St Quillamina Infirmary",
    "ReferringPhysicianName": "Drvolkonsky^Amadeo",
}
DX = "1.2.840.10008.5.1.4.1.1.1.1"
CR = "1.2.840.10008.5.1.4.1.1.1"


def film(rows, cols, arr, modality="DX", photometric="MONOCHROME2", bits=(16, 12), signed=False,
         view="PA", patient=None, **extra):
    """A single-frame grey film with the given stored values."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = DX if modality != "CR" else CR
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[str(extra), str(arr.sum()), str(rows)])
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    for k, v in PHI.items():
        setattr(ds, k, v)
    if patient is not None:
        ds.PatientID = patient
    ds.Modality = modality
    ds.ViewPosition = view
    ds.BodyPartExamined = "CHEST"
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored = bits
    ds.HighBit = bits[1] - 1
    ds.PixelRepresentation = 1 if signed else 0
    for k, v in extra.items():
        setattr(ds, k, v)
    dtype = {(8, False): "u1", (16, False): "<u2", (16, True): "<i2"}[(bits[0], signed)]
    ds.PixelData = np.ascontiguousarray(arr.astype(dtype)).tobytes()
    return ds


def ramp(rows, cols, lo, hi, seed):
    """A smooth field with noise over [lo, hi]: every value class gets exercised."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:cols]
    f = (x / max(cols - 1, 1) * 0.7 + y / max(rows - 1, 1) * 0.3)
    v = lo + f * (hi - lo) + rng.normal(0, (hi - lo) * 0.02, size=f.shape)
    return np.clip(np.round(v), lo, hi).astype(np.int64)


def save(ds, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def parity(out):
    films = os.path.join(out, "films")
    cases = {}

    def keep(name, ds):
        save(ds, os.path.join(films, name + ".dcm"))
        cases[name + ".dcm"] = "kept"

    keep("dx_mono2_12bit", film(40, 48, ramp(40, 48, 0, 4095, 1), WindowCenter=2000, WindowWidth=3000))
    keep("cr_mono1_12bit", film(40, 48, ramp(40, 48, 0, 4095, 2), modality="CR", photometric="MONOCHROME1",
                                WindowCenter=2048, WindowWidth=4096))
    keep("dx_rescale_14bit", film(33, 27, ramp(33, 27, 100, 16000, 3), bits=(16, 14), RescaleSlope=2,
                                  RescaleIntercept=-1000, WindowCenter=12000, WindowWidth=20000))
    keep("dx_rescale_fraction", film(30, 30, ramp(30, 30, 0, 4095, 4), RescaleSlope=0.5,
                                     RescaleIntercept=10, WindowCenter=1000, WindowWidth=1500))
    keep("dx_signed", film(30, 34, ramp(30, 34, -2048, 2047, 5), signed=True, bits=(16, 12),
                           WindowCenter=0, WindowWidth=3000))
    keep("dx_8bit_no_window", film(25, 31, ramp(25, 31, 0, 255, 6), bits=(8, 8)))
    keep("dx_multi_window", film(30, 30, ramp(30, 30, 0, 4095, 7), WindowCenter=[1500, 3000],
                                 WindowWidth=[1000, 2000]))
    keep("dx_sigmoid", film(30, 30, ramp(30, 30, 0, 4095, 8), WindowCenter=2048, WindowWidth=2000,
                            VOILUTFunction="SIGMOID"))
    keep("dx_linear_exact", film(30, 30, ramp(30, 30, 0, 4095, 9), WindowCenter=2048.5, WindowWidth=999,
                                 VOILUTFunction="LINEAR_EXACT"))
    lut_ds = film(30, 30, ramp(30, 30, 0, 4095, 10))
    item = Dataset()
    item.add_new(0x00283002, "US", [3000, 500, 16])  # LUTDescriptor: entries, first value, bits
    # A gamma curve, so the LUT is not a window in disguise.
    item.add_new(0x00283006, "US", [int(v) for v in np.round(65535 * np.linspace(0, 1, 3000) ** 0.6)])
    lut_ds.VOILUTSequence = Sequence([item])
    lut_ds.WindowCenter, lut_ds.WindowWidth = 100, 50  # the LUT is preferred, like pydicom
    keep("dx_voi_lut", lut_ds)
    rle = film(36, 40, ramp(36, 40, 0, 4095, 11), modality="CR", photometric="MONOCHROME1",
               WindowCenter=2048, WindowWidth=3000)
    rle.compress(RLELossless, encoding_plugin="pydicom")
    keep("cr_rle_mono1", rle)
    keep("dx_jpeg_baseline", jpeg_baseline(ramp(48, 64, 0, 255, 12)))
    # JPEG-LS, encoded by CharLS (pyjpegls); the reference decode is libjpeg's (pylibjpeg).
    jls = film(40, 48, ramp(40, 48, 0, 4095, 13), modality="CR", photometric="MONOCHROME1",
               WindowCenter=2048, WindowWidth=3000)
    jls.compress(JPEGLSLossless, encoding_plugin="pyjpegls")
    keep("cr_jpegls_lossless_mono1", jls)
    jls = film(36, 44, ramp(36, 44, 0, 4095, 14), RescaleSlope=2, RescaleIntercept=-1000,
               WindowCenter=3000, WindowWidth=5000)
    jls.compress(JPEGLSNearLossless, encoding_plugin="pyjpegls", jls_error=3)
    keep("dx_jpegls_near_lossless", jls)
    jls = film(30, 34, ramp(30, 34, -2048, 2047, 15), signed=True, WindowCenter=0, WindowWidth=3000)
    jls.compress(JPEGLSLossless, encoding_plugin="pyjpegls")
    keep("dx_jpegls_signed", jls)
    # JPEG Lossless (process 14), encoded by GDCM (python-gdcm); the reference decode is libjpeg's.
    keep("dx_jpeg_lossless_sv1_12bit", jpeg_lossless(
        film(40, 48, ramp(40, 48, 0, 4095, 16), WindowCenter=2048, WindowWidth=3000), sv1=True))
    keep("cr_jpeg_lossless_16bit_mono1", jpeg_lossless(
        film(32, 40, ramp(32, 40, 0, 65535, 17), modality="CR", photometric="MONOCHROME1",
             bits=(16, 16), WindowCenter=30000, WindowWidth=50000), sv1=True))
    keep("dx_jpeg_lossless_p14_signed", jpeg_lossless(
        film(30, 34, ramp(30, 34, -2048, 2047, 18), signed=True, WindowCenter=0, WindowWidth=3000),
        sv1=False))
    keep("dx_jpeg_lossless_8bit", jpeg_lossless(film(24, 32, ramp(24, 32, 0, 255, 19), bits=(8, 8)),
                                                sv1=True))

    # pydicom's own compressed and big-endian test files (all in the wheel).
    shipped = {
        "MR_small_bigendian.dcm": "kept",
        "MR_small_expb.dcm": "kept",
        "MR_small_RLE.dcm": "kept",
        "JPGExtended.dcm": "kept",  # 12-bit DCT: libjpeg-turbo
        # A broken stream (SOS Ss=0, Se=0 in a DCT frame): pydicom's libjpeg cannot decode it
        # either ("a misplaced marker"), libjpeg-turbo says "invalid SOS parameters".
        "JPEG-lossy.dcm": "unreadable-dicom",
        "MR_small_jp2klossless.dcm": "kept",
        "JPEG2000.dcm": "kept",
        "693_J2KI.dcm": "kept",
        "J2K_pixelrep_mismatch.dcm": "kept",
        "CT_small.dcm": "kept",
        "MR_small_jpeg_ls_lossless.dcm": "kept",
        "JPEGLSNearLossless_08.dcm": "kept",
        "JPEGLSNearLossless_16.dcm": "kept",
        "SC_rgb_jls_lossy_line.dcm": "not-greyscale",
        "SC_rgb_jpeg_gdcm.dcm": "not-greyscale",
        "SC_rgb_rle.dcm": "not-greyscale",
        "examples_ybr_color.dcm": "multi-frame",
    }
    from pydicom.data import get_testdata_file
    for name, want in shipped.items():
        src = get_testdata_file(name, download=False)
        if src is None:
            continue
        shutil.copyfile(src, os.path.join(films, "pydicom_" + name))
        cases["pydicom_" + name] = want
    with open(os.path.join(out, "cases.json"), "w") as f:
        json.dump(cases, f, indent=1, sort_keys=True)


def jpeg_baseline(arr):
    """An 8-bit grey film compressed with Pillow's JPEG encoder and encapsulated."""
    from PIL import Image
    from pydicom.encaps import encapsulate
    ds = film(arr.shape[0], arr.shape[1], arr, bits=(8, 8))
    buf = io.BytesIO()
    Image.fromarray(arr.astype(np.uint8), mode="L").save(buf, format="JPEG", quality=90)
    ds.PixelData = encapsulate([buf.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.LossyImageCompression = "01"
    return ds


def jpeg_lossless(ds, sv1):
    """ds transcoded by GDCM to JPEG Lossless: first-order prediction (.70) or process 14 (.57).

    The round trip through pydicom's decode must give back the stored values: the film is then a
    valid stream whatever prep makes of it."""
    import tempfile
    import gdcm
    want = ds.pixel_array
    ts = gdcm.TransferSyntax.JPEGLosslessProcess14_1 if sv1 else gdcm.TransferSyntax.JPEGLosslessProcess14
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "in.dcm"), os.path.join(tmp, "out.dcm")
        ds.save_as(src, enforce_file_format=True)
        r = gdcm.ImageReader()
        r.SetFileName(src)
        assert r.Read(), "gdcm cannot read the film"
        change = gdcm.ImageChangeTransferSyntax()
        change.SetTransferSyntax(gdcm.TransferSyntax(ts))
        change.SetInput(r.GetImage())
        assert change.Change(), "gdcm cannot transcode"
        w = gdcm.ImageWriter()
        w.SetFileName(dst)
        w.SetFile(r.GetFile())
        w.SetImage(change.GetOutput())
        assert w.Write(), "gdcm cannot write"
        out = pydicom.dcmread(dst)
    out.pixel_array_options(decoding_plugin="pylibjpeg")
    assert (out.pixel_array == want).all(), "JPEG Lossless round trip is not lossless"
    return out


def hostile(out):
    films = os.path.join(out, "films")
    cases = {}

    def put(name, data, want):
        p = os.path.join(films, name)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)
        cases[name] = want

    def dump(ds):
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        return buf.getvalue()

    good = dump(film(40, 40, ramp(40, 40, 0, 4095, 20), WindowCenter=2048, WindowWidth=4096))
    put("good_pa.dcm", good, "kept")
    # The patient's name as a folder name: pseudonymised paths must hide it.
    put("Zyxwort_Quillamina/IM0001", dump(film(40, 40, ramp(40, 40, 0, 4095, 21), view="AP",
                                              modality="CR", photometric="MONOCHROME1")), "kept")
    put("good_burned_in.dcm", dump(film(32, 32, ramp(32, 32, 0, 4095, 22), BurnedInAnnotation="YES")), "kept")
    put("truncated.dcm", good[: len(good) // 2], "unreadable-dicom")
    short = film(40, 40, ramp(40, 40, 0, 4095, 25))
    short.PixelData = short.PixelData[:100]  # a whole element, but too few pixels behind it
    put("short_pixel_data.dcm", dump(short), "truncated-pixel-data")
    bad_preamble = bytearray(good)
    bad_preamble[128:132] = b"DICN"
    put("wrong_preamble.dcm", bytes(bad_preamble), "not-dicom")
    huge = film(4, 4, np.zeros((4, 4)))
    huge.Rows, huge.Columns = 60000, 60000
    put("huge_header.dcm", dump(huge), "image-too-large")
    nopix = film(4, 4, np.zeros((4, 4)))
    nopix.Rows, nopix.Columns = 60000, 60000
    del nopix.PixelData
    put("huge_no_pixels.dcm", dump(nopix), "no-pixel-data")
    ct = film(32, 32, ramp(32, 32, 0, 4095, 23), modality="CT", RescaleSlope=1, RescaleIntercept=-1024)
    put("ct_slice.dcm", dump(ct), "not-xray")
    put("lateral.dcm", dump(film(32, 32, ramp(32, 32, 0, 4095, 24), view="LL")), "not-frontal")
    multi = film(8, 8, np.zeros((2, 8, 8)), NumberOfFrames=2)
    put("multi_frame.dcm", dump(multi), "multi-frame")
    sr = Dataset()
    sr.file_meta = FileMetaDataset()
    sr.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    sr.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    sr.file_meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=["sr"])
    sr.SOPClassUID = sr.file_meta.MediaStorageSOPClassUID
    sr.SOPInstanceUID = sr.file_meta.MediaStorageSOPInstanceUID
    for k, v in PHI.items():
        setattr(sr, k, v)
    sr.Modality = "SR"
    put("report.dcm", dump(sr), "no-pixel-data")
    # A Pixel Data element that claims 4 GB and stops after a few bytes.
    claim = bytearray(good[: good.rfind(b"\xe0\x7f\x10\x00")])
    claim += b"\xe0\x7f\x10\x00OW\x00\x00" + (0xFFFFFFF0).to_bytes(4, "little") + b"\x00" * 64
    put("claims_4gb.dcm", bytes(claim), "unreadable-dicom")
    put("notes.txt", b"not a film\n", "not-dicom")
    put("empty.dcm", b"", "not-dicom")
    with open(os.path.join(out, "cases.json"), "w") as f:
        json.dump(cases, f, indent=1, sort_keys=True)


def rsna(out, n):
    """N patients: Normal, Lung Opacity (1-3 box rows), No Lung Opacity / Not Normal; a few films
    missing, a CT, a lateral, a conflicting pair of rows. Expected counts to expected.json."""
    rng = np.random.default_rng(14)
    images = os.path.join(out, "stage_2_train_images")
    os.makedirs(images, exist_ok=True)
    classes = ["Normal", "Lung Opacity", "No Lung Opacity / Not Normal"]
    rows, boxes = [], []
    want = {"healthy": 0, "diseased": 0, "excluded": {}}

    def ex(reason, k=1):
        want["excluded"][reason] = want["excluded"].get(reason, 0) + k

    for i in range(n):
        pid = f"{i:08x}-{rng.integers(1 << 30):08x}-rsna"
        cls = classes[i % 3]
        k = int(rng.integers(1, 4)) if cls == "Lung Opacity" else 1
        for _ in range(k):
            rows.append((pid, cls))
            boxes.append((pid, 1 if cls == "Lung Opacity" else 0))
        ex("duplicate-row", k - 1)
        fate = "kept"
        if i % 50 == 7:
            fate = "missing"
        elif i % 50 == 13:
            fate = "ct"
        elif i % 50 == 21:
            fate = "lateral"
        elif i % 50 == 33:
            fate = "conflict"
        if fate == "conflict":
            rows.append((pid, "Normal" if cls != "Normal" else "Lung Opacity"))
            ex("duplicate-row")
            ex("conflicting-labels")
        if fate != "missing":
            arr = ramp(16, 16, 0, 255, i)
            ds = film(16, 16, arr, modality="CT" if fate == "ct" else "CR", bits=(8, 8),
                      view="LL" if fate == "lateral" else ("PA" if i % 2 else "AP"), patient=pid)
            save(ds, os.path.join(images, pid + ".dcm"))
        if fate == "missing":
            ex("file-missing")
        elif fate == "ct":
            ex("not-xray")
        elif fate == "lateral":
            ex("not-frontal")
        elif fate == "kept":
            want["healthy" if cls == "Normal" else "diseased"] += 1
    with open(os.path.join(out, "stage_2_detailed_class_info.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["patientId", "class"])
        w.writerows(rows)
    with open(os.path.join(out, "stage_2_train_labels.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["patientId", "x", "y", "width", "height", "Target"])
        for pid, t in boxes:
            w.writerow([pid, 10 if t else "", 10 if t else "", 5 if t else "", 5 if t else "", t])
    want["rows"] = len(rows)
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(want, f, indent=1, sort_keys=True)


REFERENCE_LIBJPEG = (
    "1.2.840.10008.1.2.4.51",
    "1.2.840.10008.1.2.4.57",
    "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.80",
    "1.2.840.10008.1.2.4.81",
)


def blobs(rows, cols, seed):
    """A field of a few large random bright and dark blobs with noise: films that differ in
    their low frequencies, so prep split does not take them for near-duplicates."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:cols] / max(rows, cols)
    v = np.full((rows, cols), 2000.0)
    for _ in range(6):
        cy, cx, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.1, 0.3)
        v += rng.choice([-1, 1]) * rng.uniform(600, 1200) * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / r**2)
    v += rng.normal(0, 40, size=v.shape)
    return np.clip(np.round(v), 200, 3800).astype(np.int64)


GLYPHS = {
    "R": ["11110", "10001", "10001", "11110", "10100", "10010", "10001"],
    "L": ["10000", "10000", "10000", "10000", "10000", "10000", "11111"],
}


def burn(arr, text, y, x):
    """White 5x7 letters, as a side marker is burned into a film."""
    for c in text:
        for dy, row in enumerate(GLYPHS[c]):
            for dx, bit in enumerate(row):
                if bit == "1":
                    arr[y + dy, x + dx] = 4095
        x += 7


def pipeline(out, n):
    """Films for filter -> inpaint -> split -> train -> audit: 12-bit CR/DX, MONOCHROME1 and 2,
    uncompressed, RLE, JPEG-LS and JPEG Lossless, two films per patient, a burned-in label in
    some, the BurnedInAnnotation flag on one; patient-named folders. Diseased films have a
    brighter patch so there is something to learn."""
    for label, base in (("healthy", 0), ("diseased", 1000)):
        for i in range(n):
            k = base + i // 2
            arr = blobs(128, 128, 100 + base + i)
            if label == "diseased":
                arr[40:88, 24:60] = np.minimum(arr[40:88, 24:60] + 900, 4095)
            if i % 3 == 0:
                burn(arr, "RL", 8, 8)  # a burned-in marker for prep inpaint
            mono1 = i % 4 == 1
            if mono1:
                arr = 4095 - arr
            extra = {"BurnedInAnnotation": "YES"} if i == 0 else {}
            ds = film(128, 128, arr, modality="CR" if mono1 else "DX",
                      photometric="MONOCHROME1" if mono1 else "MONOCHROME2",
                      view="PA" if i % 2 else "AP", patient=f"MRN-99887766-{k:04d}",
                      WindowCenter=2048, WindowWidth=4096, **extra)
            syntax = i % 4
            if syntax == 1:
                ds.compress(RLELossless, encoding_plugin="pydicom")
            elif syntax == 2:
                ds.compress(JPEGLSLossless, encoding_plugin="pyjpegls")
            elif syntax == 3:
                ds = jpeg_lossless(ds, sv1=True)
            save(ds, os.path.join(out, label, "Zyxwort_Quillamina", f"{k:04d}", f"IM{i:04d}.dcm"))


def expected(ds, mode):
    """pydicom's pixel_array -> apply_modality_lut -> apply_voi_lut, in prep's output form."""
    if ds.file_meta.TransferSyntaxUID in REFERENCE_LIBJPEG:
        # libjpeg (pylibjpeg-libjpeg), not CharLS or GDCM: not the films' encoders, not prep's
        # JPEG-LS decoder (CharLS).
        ds.pixel_array_options(decoding_plugin="pylibjpeg")
    elif ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50":
        ds.pixel_array_options(decoding_plugin="pillow")  # libjpeg-turbo, whatever else is there
    arr = ds.pixel_array.astype(np.int64)
    bs = int(ds.BitsStored)
    signed = int(ds.PixelRepresentation) == 1
    mono1 = ds.PhotometricInterpretation == "MONOCHROME1"
    if mode == "raw16":
        u = arr + (1 << (bs - 1) if signed else 0)
        if mono1:
            u = (1 << bs) - 1 - u
        return (u << (16 - bs)).astype(np.int64)
    y = apply_voi_lut(apply_modality_lut(arr, ds), ds)
    if ds.get("VOILUTSequence"):
        lo, hi = 0.0, 2.0 ** int(ds.VOILUTSequence[0].LUTDescriptor[2]) - 1
    else:
        lo, hi = (-(2.0 ** (bs - 1)), 2.0 ** (bs - 1) - 1) if signed else (0.0, 2.0 ** bs - 1)
        if "RescaleSlope" in ds and "RescaleIntercept" in ds:
            m, b = float(ds.RescaleSlope), float(ds.RescaleIntercept)
            lo, hi = lo * m + b, hi * m + b
    v = np.clip(np.round((y - lo) / (hi - lo) * 255), 0, 255)
    return (255 - v if mono1 else v).astype(np.int64)


def check(bag, films, window=None):
    """window: "C,W" given to prep as --window: it replaces every film's own VOI."""
    from PIL import Image
    with open(os.path.join(bag, "data", "records.csv"), newline="") as f:
        records = list(csv.DictReader(f))
    bad = 0
    for r in records:
        ds = pydicom.dcmread(os.path.join(films, r["source_file"]))
        if window:
            for k in ("VOILUTSequence", "VOILUTFunction"):
                if k in ds:
                    delattr(ds, k)
            ds.WindowCenter, ds.WindowWidth = [float(x) for x in window.split(",")]
        mode = r["dicom_output"]
        want = expected(ds, mode)
        got = np.asarray(Image.open(os.path.join(bag, r["path"]))).astype(np.int64)
        if got.shape != want.shape:
            print(f"MISMATCH {r['source_file']}: shape {got.shape} != {want.shape}")
            bad += 1
            continue
        diff = np.abs(got - want)
        # Lossy JPEG: ISO 10918-2 lets two conforming decoders' IDCTs differ by one level
        # (pydicom decodes with libjpeg-turbo through Pillow, prep with jpeg-decoder), so one
        # stored level is allowed there; every lossless syntax must be exact.
        lossy = ds.file_meta.TransferSyntaxUID in ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51")
        shift = int(r["dicom_png_shift"])
        limit = ((1 << shift) if lossy else 0) if mode == "raw16" else 1
        status = "ok" if int(diff.max()) <= limit else "MISMATCH"
        bad += status != "ok"
        print(f"{status} {r['source_file']} {mode} max|diff|={int(diff.max())} (limit {limit}), "
              f"{int((diff > 0).sum())} of {diff.size} pixels differ; "
              f"{r['dicom_transfer_syntax']} {r['dicom_photometric']} voi={r['dicom_voi']!r}")
    print(f"checked {len(records)} film(s), {bad} mismatch(es)")
    return 1 if bad else 0


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "parity":
        parity(sys.argv[2])
    elif cmd == "hostile":
        hostile(sys.argv[2])
    elif cmd == "rsna":
        rsna(sys.argv[2], int(sys.argv[3]))
    elif cmd == "pipeline":
        pipeline(sys.argv[2], int(sys.argv[3]))
    elif cmd == "check":
        sys.exit(check(sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else None))
    else:
        sys.exit(f"unknown command {cmd}")
