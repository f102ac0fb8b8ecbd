#!/bin/bash
# Upstream netns.sh with every peer inline.
. /mnt/kmod/harness/guest/netns.sh inline
