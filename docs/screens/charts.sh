#!/bin/sh
# Pictures of the charts (docs/screens/chart-*.png) from a fresh demo trial.
# Run from the repository root: sh docs/screens/charts.sh  (about a minute)
set -eu
screens=$(cd "$(dirname "$0")" && pwd)
trial=$(mktemp -d)
trap 'rm -rf "$trial"' EXIT
randomizer demo --dir "$trial/demo" --quiet > /dev/null
rm -f "$screens"/chart-*.png
RANDOMIZER_PASSWORD=demo-alice-password randomizer --db "sqlite:///$trial/demo/trial.db" \
  --key-file "$trial/demo/trial.key" --user alice report \
  --chart "$screens/chart-recruitment.png" --balance-chart "$screens/chart-balance.png" \
  --kit-chart "$screens/chart-kits.png" > /dev/null
randomizer design check exosome-ms --predictability \
  --chart "$screens/chart-predictability.png" > /dev/null
chmod 644 "$screens"/chart-*.png
ls "$screens"/chart-*.png
