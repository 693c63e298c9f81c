#!/usr/bin/env bash
# The deployment files agree with each other, without Docker (deploy/check-image.sh builds
# and runs the image, which needs a daemon and a Debian base: not part of CI):
#   - appinfo/info.xml's <image-tag> is the crate's version and <version>, so AppAPI pulls
#     the image built from this source;
#   - docker-compose.yml and deploy/compose.serve.yaml default to that same image;
#   - the entrypoint, healthcheck and check scripts parse.
set -euo pipefail
cd "$(dirname "$0")/../.."

tag() { sed -n "s:.*<$1>\(.*\)</$1>.*:\1:p" appinfo/info.xml | sed -n 1p; }
crate=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | sed -n 1p)
registry=$(tag registry) image=$(tag image) image_tag=$(tag image-tag) app_version=$(tag version)
[ -n "$registry" ] && [ -n "$image" ] && [ -n "$image_tag" ] || { echo "FAIL: info.xml has no <docker-install>"; exit 1; }
[ "$image_tag" = "$crate" ] || { echo "FAIL: info.xml image-tag $image_tag, Cargo.toml version $crate"; exit 1; }
[ "$app_version" = "$crate" ] || { echo "FAIL: info.xml version $app_version, Cargo.toml version $crate"; exit 1; }
full="$registry/$image:$image_tag"
for f in docker-compose.yml deploy/compose.serve.yaml; do
  grep -qF "\${HARPBRIDGE_IMAGE:-$full}" "$f" || { echo "FAIL: $f does not default to $full"; exit 1; }
done
grep -qF "$full" Dockerfile || { echo "FAIL: the Dockerfile's header does not name $full"; exit 1; }
for s in deploy/start.sh deploy/healthcheck.sh deploy/check-image.sh; do
  bash -n "$s"
  [ -x "$s" ] || { echo "FAIL: $s is not executable"; exit 1; }
done
echo "deploy files agree: image $full, scripts parse"
