#!/usr/bin/env bash
# Sourced by the device-*.sh scripts: makes the NVIDIA driver's Vulkan ICD usable on a lent machine.
# What worked on an H200 machine whose image has the NVIDIA driver but no Vulkan loader: unpack
# the loader and libglvnd (apt-get download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0
# libgles2) into /, the X libraries the NVIDIA ICD links against (libx11-6 libxext6 libxcb1 libxau6
# libxdmcp6 libbsd0 libmd0) into /tmp/x, and name the driver's ICD file.
if ! ldconfig -p | grep -q libvulkan.so.1; then
  for f in .gl/*.deb; do dpkg -x "$f" /; done
  ldconfig
fi
if [ -d .gl/extra ]; then
  mkdir -p /tmp/x
  for f in .gl/extra/*.deb; do dpkg -x "$f" /tmp/x; done
  export LD_LIBRARY_PATH="/tmp/x/usr/lib/x86_64-linux-gnu:/tmp/x/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
if [ -z "${VK_DRIVER_FILES:-}" ] && [ -e /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
  export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
fi
