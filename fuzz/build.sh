#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz_messages, fuzz_frames) and the seed writer with
# clang's libFuzzer, AddressSanitizer and UndefinedBehaviorSanitizer, from only the csrc/
# sources the decoders and frame readers need. Objects are rebuilt only when a source, a
# header it includes (clang's dependency files) or the flags changed, so a second run is
# almost free.
#
#   fuzz/build.sh                 build into fuzz/build (or $FUZZ_BUILD_DIR)
#   fuzz/build.sh --write-seeds   build, then regenerate fuzz/corpus from sample_messages.cpp
#
# Needs clang++ with libFuzzer (scripts/setup.sh installs the system's clang).
set -euo pipefail
cd "$(dirname "$0")/.."

CXX=${CXX:-clang++}
BUILD=${FUZZ_BUILD_DIR:-fuzz/build}
if ! command -v "$CXX" >/dev/null 2>&1; then
  echo "fuzz/build.sh: $CXX not found; run scripts/setup.sh (it installs clang)" >&2
  exit 1
fi

# Objects carry coverage instrumentation and sanitizers; only the final link of a target
# adds libFuzzer's main. Every UB report aborts, so libFuzzer keeps the input.
CXXFLAGS="-std=c++20 -O1 -g -fno-omit-frame-pointer -fsanitize=fuzzer-no-link,address,undefined \
-fno-sanitize-recover=all -Wall -Wextra -Werror=switch -Icsrc -I."
SANITIZE_LINK="-fsanitize=address,undefined"

CORE="csrc/core/errors.cpp csrc/core/dtype.cpp csrc/core/log.cpp"
PROTO="csrc/proto/wire.cpp csrc/proto/messages.cpp csrc/proto/state_messages.cpp"
NET="csrc/net/link.cpp csrc/net/link_frames.cpp csrc/net/frame_conn.cpp csrc/net/event_loop.cpp \
csrc/net/socket.cpp csrc/net/cancel.cpp csrc/net/tcp_link.cpp csrc/net/address.cpp"
DECODE="fuzz/decode_message.cpp"

declare -A TARGET_SOURCES=(
  [fuzz_messages]="fuzz/fuzz_messages.cpp $DECODE $PROTO $CORE"
  [fuzz_frames]="fuzz/fuzz_frames.cpp $DECODE $PROTO $NET $CORE"
  [write_seeds]="fuzz/write_seeds.cpp fuzz/sample_messages.cpp $DECODE $PROTO $CORE"
)

mkdir -p "$BUILD/obj"
# Other flags or another compiler: start over.
stamp="$BUILD/flags"
if [ "$(cat "$stamp" 2>/dev/null)" != "$CXX $CXXFLAGS" ]; then
  rm -rf "${BUILD:?}/obj" && mkdir -p "$BUILD/obj"
  echo "$CXX $CXXFLAGS" >"$stamp"
fi

obj_of() { local s=${1//\//_}; echo "$BUILD/obj/${s%.cpp}.o"; }

# An object is current when it is newer than every file its dependency file names.
current() {
  local obj=$1 dep="${1%.o}.d" f
  [ -f "$obj" ] && [ -f "$dep" ] || return 1
  for f in $(sed -e 's/^[^:]*://' -e 's/\\$//' "$dep"); do
    [ "$f" -nt "$obj" ] && return 1
  done
  return 0
}

jobs=$(nproc 2>/dev/null || echo 2)
running=0
failed=0
for src in $(printf '%s\n' ${TARGET_SOURCES[@]} | sort -u); do
  obj=$(obj_of "$src")
  current "$obj" && continue
  echo "  CXX $src"
  $CXX $CXXFLAGS -MMD -MF "${obj%.o}.d" -c "$src" -o "$obj" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then
    wait -n || failed=1
    running=$((running - 1))
  fi
done
while [ "$running" -gt 0 ]; do
  wait -n || failed=1
  running=$((running - 1))
done
[ "$failed" -eq 0 ] || { echo "fuzz/build.sh: compilation failed" >&2; exit 1; }

# The core may use OpenSSL (TLS links): link it when any object's headers include it.
LIBS="-lpthread"
if grep -qs "openssl/" "$BUILD"/obj/*.d; then LIBS="$LIBS -lssl -lcrypto"; fi

for target in "${!TARGET_SOURCES[@]}"; do
  objs=()
  newest=0
  for src in ${TARGET_SOURCES[$target]}; do objs+=("$(obj_of "$src")"); done
  out="$BUILD/$target"
  relink=0
  [ -f "$out" ] || relink=1
  for o in "${objs[@]}"; do [ "$o" -nt "$out" ] && relink=1; done
  [ "$relink" -eq 1 ] || continue
  echo "  LINK $out"
  if [ "$target" = write_seeds ]; then
    $CXX $SANITIZE_LINK "${objs[@]}" $LIBS -o "$out"
  else
    $CXX -fsanitize=fuzzer,address,undefined "${objs[@]}" $LIBS -o "$out"
  fi
done

if [ "${1:-}" = "--write-seeds" ]; then
  rm -rf fuzz/corpus/messages fuzz/corpus/frames
  ASAN_OPTIONS=detect_leaks=0 "$BUILD/write_seeds" fuzz/corpus
  echo "seeds written to fuzz/corpus"
fi
