#pragma once
// serve_queue: the loop the simple devices (rng, console, mem, tablet) run over one queue on
// the thread that notified it. It takes chains while `more()` holds, at most the queue's size
// per call (so one kick is bounded), lets `serve` read or fill each and say how many bytes it
// wrote into the chain, returns each with that used length, and interrupts the driver once at
// the end if the ring asks for it. A broken ring (pop or push) or an error from `serve` is the
// driver's fault: it comes back as the result and no further chain is taken; the device then
// reports it (VirtioTransport::device_error) and stops serving until reset().
//
// Thread-safety: the caller holds whatever serialises its queue.

#include <cstdint>
#include <functional>

#include "base/error.h"
#include "virtio/virtio_device.h"

namespace lamina::virtio {

using ChainServer = std::function<Result<uint32_t>(Virtqueue& queue, const DescriptorChain& chain)>;

[[nodiscard]] Result<void> serve_queue(VirtioTransport& transport, uint16_t index,
                                       const std::function<bool()>& more, const ChainServer& serve);

}  // namespace lamina::virtio
