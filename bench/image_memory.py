"""The model server's memory under the worst images its limits allow (issue 15).

    python -m bench.image_memory

Starts the REST model server (a real process) with a small classifier, and measures its
resident memory (peak, from /proc's VmHWM) after warm-up, after ordinary JPEGs, and after
the largest images the limits let through (a 4096 x 4096 PNG that compresses under the byte
limit, a 4096 x 4096 JPEG, a progressive JPEG at the JPEG limit of 45 megapixels, whose
coefficients libjpeg keeps whole), each sent three times, and images over the limits (a PNG of noise
over 16 MiB, a 7000 x 7000 PNG header). The bound to compare with (imaging.py): 140 MiB per
request in flight above the model's.
"""

import io
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

from bench import report
from straightline_common.modelstore import ModelStore
from straightline_common.processes import ServiceProcess
from tests.support.models import image_bytes, make_classifier, png_header


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError("no VmHWM in /proc")


def an_image(size: int, image_format: str, noise: bool) -> bytes:
    """Noise (large files), or a gradient that compresses far under the byte limit (the
    worst PNG that passes it: decoded whole, PNG has no draft mode)."""
    if noise:
        pixels = np.random.default_rng(1).integers(0, 256, (size, size, 3), dtype=np.uint8)
    else:
        ramp = np.linspace(0, 255, size, dtype=np.uint8)
        pixels = np.stack(np.broadcast_arrays(ramp[None, :], ramp[:, None], ramp[None, :]), -1)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format=image_format)
    return out.getvalue()


def a_progressive_photograph(width: int, height: int) -> bytes:
    """Detail like a photograph's (coarse noise, enlarged), progressive: the JPEG whose
    decoding takes most memory at a given size."""
    coarse = np.random.default_rng(1).integers(0, 256, (height // 16, width // 16, 3), np.uint8)
    out = io.BytesIO()
    Image.fromarray(coarse).resize((width, height)).save(
        out, format="JPEG", quality=95, progressive=True
    )
    return out.getvalue()


def post(port: int, data: bytes, content_type: str) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/models/tiny/predict",
        data=data,
        headers={"Content-Type": content_type},
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code


def main() -> None:
    images = {
        "ordinary JPEG (64 px)": (image_bytes(), "image/jpeg"),
        "4096 x 4096 PNG of noise (over the byte limit)": (
            an_image(4096, "PNG", noise=True),
            "image/png",
        ),
        "4096 x 4096 PNG, a gradient": (an_image(4096, "PNG", noise=False), "image/png"),
        "4096 x 4096 JPEG of noise": (an_image(4096, "JPEG", noise=True), "image/jpeg"),
        "8192 x 5464 progressive JPEG (45 megapixels, the JPEG limit)": (
            a_progressive_photograph(8192, 5464),
            "image/jpeg",
        ),
        "7000 x 7000 PNG header (over the limit)": (png_header(7000, 7000), "image/png"),
    }
    with tempfile.TemporaryDirectory() as scratch:
        store = ModelStore(Path(scratch) / "models")
        make_classifier(store)
        server = ServiceProcess(
            "straightline_inference.modelserver",
            ["--store", str(store.root), "--listen", "127.0.0.1:0", "--threads", "1"],
            Path(scratch),
        ).wait_ready(120)
        try:
            port, pid = server.ports["http"], server.process.pid
            rows = [{"after": "start and warm-up", "peak_rss_mib": peak_rss_mib(pid)}]
            for name, (data, content_type) in images.items():
                started = time.perf_counter()
                statuses = [post(port, data, content_type) for _ in range(3)]
                rows.append(
                    {
                        "after": f"3 x {name}",
                        "bytes": len(data),
                        "statuses": statuses,
                        "seconds_each": round((time.perf_counter() - started) / 3, 3),
                        "peak_rss_mib": peak_rss_mib(pid),
                    }
                )
        finally:
            server.terminate()
    results = {"date": time.strftime("%Y-%m-%d"), "machine": report.machine(), "rows": rows}
    report.write("image_memory", results, markdown(results))
    print(markdown(results))


def markdown(results: dict) -> str:
    m = results["machine"]
    lines = [
        "## Model server memory under the largest images (issue 15)",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores. Command: `python -m bench.image_memory`. "
        f"{results['date']}. One model-server process (one thread), a small classifier; peak "
        "resident memory (VmHWM) after each step.",
        "",
        "| after | image bytes | answers | seconds each | peak RSS MiB |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in results["rows"]:
        lines.append(
            f"| {row['after']} | {row.get('bytes', '')} | "
            f"{' '.join(map(str, row.get('statuses', [])))} | {row.get('seconds_each', '')} | "
            f"{row['peak_rss_mib']} |"
        )
    base = results["rows"][0]["peak_rss_mib"]
    worst = max(r["peak_rss_mib"] for r in results["rows"])
    lines += [
        "",
        f"The worst image the limits allow raised the peak by {worst - base:.0f} MiB over the "
        "warmed-up server, against the documented bound of 140 MiB per request in flight "
        "(imaging.py; decoding and converting a PNG of 4096 x 4096 pixels); the over-limit "
        "images are refused (413 for bytes, 400 for pixels, from the header) without changing it.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
