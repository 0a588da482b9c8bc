"""``ditr import scannetpp``: ScanNet++ laser-scan meshes with the undistorted DSLR images."""

from __future__ import annotations

import argparse
from pathlib import Path

from ...io.splits import HOW_TO_WRITE_SPLITS

from ._progress import import_progress

NAME = "scannetpp"
HELP = "ScanNet++ (mesh_aligned_0.05.ply + annotations, undistorted DSLR images)"
NO_SPLITS = ("no split lists written: SRC/splits/nvs_sem_train.txt and nvs_sem_val.txt are absent; "
             + HOW_TO_WRITE_SPLITS)
DESCRIPTION = """ScanNet++ scenes: the laser-scan mesh (points, colours, normals from the faces), its annotation
(instance per point; a semantic segment when --classes lists the classes) and the undistorted DSLR
images with their nerfstudio poses (converted from nerfstudio's OpenGL camera and world axes to the
scene format's OpenCV camera in the mesh frame; checked against dslr/colmap/images.txt when present).
Frames marked is_bad are skipped and counted. The iPhone stream is not imported.

layout:
  SRC/data/<scene>/scans/mesh_aligned_0.05.ply, segments.json, segments_anno.json
  SRC/data/<scene>/dslr/resized_undistorted_images/*.JPG (or undistorted_images/)
  SRC/data/<scene>/dslr/nerfstudio/transforms_undistorted.json   (toolkit: python -m dslr.undistort)
  SRC/splits/nvs_sem_train.txt, nvs_sem_val.txt                   optional -> OUT/splits/"""
EXAMPLES = """examples:
  ditr import scannetpp /data/scannetpp scenes/ --classes /data/scannetpp/metadata/semantic_benchmark/top100.txt
  ditr import scannetpp /data/scannetpp scenes/ --scenes 0a5c013435 --frame-step 5 --max-frames 40"""


def add_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("src", type=Path, help="ScanNet++ root (holding data/<scene>/)")
    s.add_argument("out", type=Path, help="output directory; one scene directory per scene")
    s.add_argument("--classes", type=Path, default=None,
                   help="semantic class list, one name per line (e.g. metadata/semantic_benchmark/top100.txt); "
                        "without it only instance.npy and the raw label names (meta.json) are written")
    s.add_argument("--frame-step", type=int, default=1, help="keep every k-th DSLR frame (default 1)")
    s.add_argument("--max-frames", type=int, default=None, help="at most this many frames per scene")
    s.add_argument("--images", default=None, metavar="DIR",
                   help="image folder under dslr/ (default: resized_undistorted_images, else undistorted_images)")
    s.add_argument("--scenes", nargs="+", default=None, metavar="SCENE", help="import only these scenes")
    s.add_argument("--skip-existing", action="store_true", help="keep scenes already in OUT (resume an import)")


def run(args: argparse.Namespace):
    from ...io.scannetpp import import_scannetpp

    with import_progress(NAME, "scenes") as progress:
        return import_scannetpp(args.src, args.out, classes=args.classes, frame_step=args.frame_step,
                                max_frames=args.max_frames, image_dir=args.images, scenes=args.scenes,
                                skip_existing=args.skip_existing, progress=progress)
