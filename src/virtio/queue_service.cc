#include "virtio/queue_service.h"

namespace lamina::virtio {

Result<void> serve_queue(VirtioTransport& transport, uint16_t index,
                         const std::function<bool()>& more, const ChainServer& serve) {
  Virtqueue* queue = transport.queue(index);
  if (queue == nullptr) return {};
  bool returned = false;
  Result<void> outcome;
  for (uint32_t taken = 0; taken < queue->layout().size && more(); ++taken) {
    auto popped = queue->pop();
    if (!popped) {
      outcome = fail(popped.error());
      break;
    }
    if (!*popped) break;
    const DescriptorChain& chain = **popped;
    auto written = serve(*queue, chain);
    if (!written) {
      outcome = fail(written.error());
      break;
    }
    if (auto pushed = queue->push(chain.head, *written); !pushed) {
      outcome = fail(pushed.error());
      break;
    }
    returned = true;
  }
  if (returned && queue->should_signal()) transport.signal_queue(index);
  return outcome;
}

}  // namespace lamina::virtio
