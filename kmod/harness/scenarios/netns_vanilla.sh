#!/bin/bash
# Upstream netns.sh with every peer vanilla.
. /mnt/kmod/harness/guest/netns.sh vanilla
