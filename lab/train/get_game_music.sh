#!/bin/sh
# Real recordings to train the `small` beat model on: four Debian game-music packages (about 375 MB,
# 8.7 h of music), unpacked into DIR (default /tmp/gamemusic), never into the repository. The music is
# CC BY-SA 3.0 / GPL-2+ (README, "Credits and licences"): train on it, never ship or commit the audio.
#
#   sh lab/train/get_game_music.sh [DIR]
#   beatbus label beats DIR/music --out DIR/labels
#   beatbus train beat-small --data DIR/labels --augment 1 --out /tmp/small_real.pt
set -eu
dir=${1:-/tmp/gamemusic}
mkdir -p "$dir/debs" "$dir/root" "$dir/music"
cd "$dir/debs"
apt-get download warzone2100-music wesnoth-1.16-music nexuiz-music singularity-music
for deb in ./*.deb; do dpkg -x "$deb" "$dir/root"; done
games="$dir/root/usr/share/games"
# Nexuiz keeps its tracks in a zip archive
unzip -q -o "$games/nexuiz/data/music.pk3" 'sound/cdtracks/*' -d "$dir/nexuiz"
ln -sfn "$dir/nexuiz/sound/cdtracks" "$dir/music/nexuiz"
ln -sfn "$games/warzone2100/music" "$dir/music/warzone2100"
ln -sfn "$games/wesnoth/1.16/data/core/music" "$dir/music/wesnoth"
ln -sfn "$games/singularity/music" "$dir/music/singularity"
echo "$dir/music: $(find -L "$dir/music" -name '*.ogg' -o -name '*.opus' | wc -l) tracks"
