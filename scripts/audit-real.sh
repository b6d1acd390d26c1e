#!/usr/bin/env bash
# The measurement in docs/audit.md: real Cohen COVID films (../shared/data/samples/cohen) against
# real NIH ChestX-ray14 films (../shared/data/nih), split as the paper did, audited before and
# after `prep harmonize`. Prints each audit's verdict line; everything goes under $OUT.
#   scripts/audit-real.sh [OUT=/tmp/audit-real] [PREP=target/debug/prep]
set -euo pipefail
OUT=${1:-/tmp/audit-real}
PREP=${PREP:-target/debug/prep}
DATA=${DATA:-../shared/data}
rm -rf "$OUT" && mkdir -p "$OUT"
gzip -dc "$DATA/nih/Data_Entry_2017_v2020.csv.gz" > "$OUT/Data_Entry_2017.csv"
B="$OUT/bags"
"$PREP" filter --source cohen --dataset "$DATA/samples/cohen" \
    --metadata "$DATA/samples/cohen/metadata_subset.csv" --out "$B/covid" | tail -1
"$PREP" filter --source nih --label-others --dataset "$DATA/nih/images" \
    --metadata "$OUT/Data_Entry_2017.csv" --out "$B/nih" | tail -1
for mode in balanced all; do
    extra=(); [ "$mode" = balanced ] && extra=(--balanced --ratio 2:1:1)
    "$PREP" split "${extra[@]}" --train 0.7 --val 0.3 --seed 2020 --covid "$B/covid" \
        --healthy "$B/nih" --diseased "$B/nih" --out "$B/split-$mode" | tail -1
    echo "== $mode split, as filtered"
    "$PREP" audit "$B/split-$mode" --out "$OUT/audit-$mode-raw" --seed 2020 2>/dev/null
done
"$PREP" harmonize "$B/covid" "$B/nih" --out "$B/harmonized" | tail -2
for mode in balanced all; do
    extra=(); [ "$mode" = balanced ] && extra=(--balanced --ratio 2:1:1)
    "$PREP" split "${extra[@]}" --train 0.7 --val 0.3 --seed 2020 --covid "$B/harmonized" \
        --healthy "$B/harmonized" --diseased "$B/harmonized" --out "$B/split-$mode-h" | tail -1
    echo "== $mode split, harmonized"
    "$PREP" audit "$B/split-$mode-h" --out "$OUT/audit-$mode-harmonized" --seed 2020 2>/dev/null
done
