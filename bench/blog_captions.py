"""The seed's caption script, re-implemented as it ran: pandas `iterrows` over the whole ground-truth CSV,
and for every malignant row an f-string caption, `, hairy` when the seed's hair test (blog_hair.is_hairy, at
the file's native resolution) says so, and one `<image>.caption` file written with open()/write().

Run: python bench/blog_captions.py GROUND_TRUTH_CSV IMAGE_DIR OUT_DIR  (used by bench/bench_captions.py)
"""

import os
import sys

import pandas as pd

from blog_hair import is_hairy


def main(csv, images, out):
    df = pd.read_csv(csv)
    os.makedirs(out, exist_ok=True)
    for _, row in df.iterrows():
        if row["target"] != 1:
            continue
        sex = row["sex"] if pd.notna(row["sex"]) else ""
        site = f"on {row['anatom_site_general_challenge']}" if pd.notna(row["anatom_site_general_challenge"]) else ""
        age = f", at age {int(row['age_approx'])}" if pd.notna(row["age_approx"]) else ""
        caption = f"photo of {sex} skin, me1anoma {site} {age}"
        if is_hairy(os.path.join(images, f"{row['image_name']}.jpg")):
            caption += ", hairy"
        with open(os.path.join(out, f"{row['image_name']}.caption"), mode="w") as caption_file:
            caption_file.write(caption)


if __name__ == "__main__":
    main(*sys.argv[1:4])
