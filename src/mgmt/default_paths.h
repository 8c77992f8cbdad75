#pragma once
// Where laminad keeps its state and listens when not told otherwise; `lamina vm` finds it by
// the same rule. As root: /var/lib/lamina and /run/lamina/laminad.sock; as a user:
// $XDG_STATE_HOME/lamina (else ~/.local/state/lamina) and $XDG_RUNTIME_DIR/lamina/laminad.sock
// (else the state folder's laminad.sock). Stateless; reads the environment.

#include <filesystem>

namespace lamina::mgmt {

std::filesystem::path default_state_dir();
std::filesystem::path default_socket();

}  // namespace lamina::mgmt
