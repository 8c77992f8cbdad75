#pragma once
// The virtio devices' name for base/dma_memory.h's DmaMemory, which non-virtio devices that
// do DMA (fw_cfg) share.

#include "base/dma_memory.h"

namespace lamina::virtio {

using DmaMemory = lamina::DmaMemory;

}  // namespace lamina::virtio
