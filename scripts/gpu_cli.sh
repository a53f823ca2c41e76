# GPU smoke of `flactl bench` (CLI area). Run on the device machine from the repo root, with
# carry [".peer"] so fla 0.6.0 is the side-by-side peer. Writes JSON under $OUT; prints tables.
source scripts/gpu_setup.sh
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
B="python -m flactl bench"
S="-B 4 -H 16 -D 128 --rep-ms 50 --warmup-ms 10"
timeout 50 $B gla --mode fwd -T 1024,2048,4096,8192 $S -o $OUT/gla_fwd.json --plot $OUT/gla_fwd.png
timeout 35 $B gla --mode fwdbwd -T 4096 $S -o $OUT/gla_fwdbwd.json
timeout 25 $B gated_delta_rule --mode decode -T 4096,32768 $S -o $OUT/gdn_decode.json
timeout 30 $B layer:gla --mode fwdbwd -T 2048,8192 -B 4 -H 4 --hidden-size 1024 --rep-ms 50 -o $OUT/layer_gla.json
timeout 40 $B model:gla --preset 340m --mode all -T 2048 -B 8 --steps 3 --gen-tokens 16 -o $OUT/model_gla.json
