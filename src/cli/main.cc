// `lamina`: the command-line tool. Parses the command line and hands off to a subcommand.

#include <CLI/CLI.hpp>

#include "cli/commands.h"

int main(int argc, char** argv) {
  CLI::App app{
      "Lamina: a virtualization platform. Runs unmodified operating systems in isolated VMs "
      "on a built-in x86-64 CPU or on KVM, with VHD virtual disks.",
      "lamina"};
  app.set_version_flag("-V,--version", "lamina " LAMINA_VERSION);
  // At most one command; with none, the help is shown. An unknown word is reported as such.
  app.require_subcommand(0, 1);
  app.footer("Run 'lamina <command> --help' for a command's options.");

  lamina::cli::add_run_command(app);
  lamina::cli::add_disk_command(app);
  lamina::cli::add_vm_command(app);
  lamina::cli::add_switch_command(app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::RuntimeError& end) {
    // How commands end with their own status (a guest's debug-exit status may be any byte).
    return app.exit(end);
  } catch (const CLI::ParseError& error) {
    // CLI11 numbers its usage errors from 100 (106 required, 109 extras, ...): every usage
    // error is status 2; --help and --version end parsing with status 0.
    const int status = app.exit(error);
    return status == 0 ? 0 : 2;
  }
  if (app.get_subcommands().empty()) std::fputs(app.help().c_str(), stdout);
  return 0;
}
