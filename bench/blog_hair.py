"""The seed's hair script, re-implemented as it ran: for every image in a folder, a full-resolution decode and
the edge-length test at that native size (gray, GaussianBlur 5x5, Canny 50/250, external contours, keep
arcLength >= 100, hairy when they sum to > 4000). One process; OpenCV's own threads use every core. The
decisions go to a CSV beside nothing it reads (a temporary file), as the seed kept them for its captions.

Run: python bench/blog_hair.py IMAGE_DIR  (used by bench/bench_images.py)
"""

import csv
import os
import sys
import tempfile

import cv2


def is_hairy(path):
    image = cv2.imread(path)
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    blurred = cv2.GaussianBlur(gray, (5, 5), 0)
    edges = cv2.Canny(blurred, 50, 250)
    contours, _ = cv2.findContours(edges, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    total = 0
    for contour in contours:
        length = cv2.arcLength(contour, False)
        if length >= 100:
            total += length
    return total > 4000


def main(folder):
    with tempfile.NamedTemporaryFile("w", newline="", suffix=".csv") as out:
        writer = csv.writer(out)
        for name in sorted(os.listdir(folder)):
            if name.lower().endswith((".jpg", ".jpeg", ".png")):
                writer.writerow([os.path.splitext(name)[0], is_hairy(os.path.join(folder, name))])


if __name__ == "__main__":
    main(sys.argv[1])
