#include "client/cli/yaml.h"

#include <cctype>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"

namespace smolvm::cli {
namespace {

// NeedsQuotes says whether a plain (unquoted) scalar would not read back as
// the string `s`.
bool NeedsQuotes(const std::string& s) {
  if (s.empty()) return true;
  static const char* const kSpecialWords[] = {"true",  "false", "null", "yes", "no", "on",
                                              "off",   "y",     "n",    "~",   "True",
                                              "False", "Null",  "NULL", "Yes", "No"};
  for (const char* word : kSpecialWords) {
    if (s == word) return true;
  }
  double number;
  if (absl::SimpleAtod(s, &number) || absl::StartsWith(s, "0x") || absl::StartsWith(s, "0o") ||
      absl::StartsWith(s, ".")) {
    return true;
  }
  // Indicators that start something else than a plain scalar.
  if (std::string("-?:,[]{}#&*!|>'\"%@`").find(s[0]) != std::string::npos) {
    // "-x", ":x" and "?x" are plain in YAML 1.2, but not in every reader.
    return true;
  }
  if (s.front() == ' ' || s.back() == ' ' || s.back() == ':') return true;
  if (absl::StrContains(s, ": ") || absl::StrContains(s, " #")) return true;
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f) return true;
  }
  return false;
}

std::string Scalar(const nlohmann::ordered_json& value) {
  if (value.is_string()) {
    const std::string& s = value.get_ref<const std::string&>();
    if (!NeedsQuotes(s)) {
      // Valid UTF-8 is kept as is; dump() replaces invalid bytes.
      const std::string quoted = value.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
      const std::string plain = quoted.substr(1, quoted.size() - 2);
      if (plain == s) return s;
      return quoted;
    }
  }
  return value.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

bool IsEmptyContainer(const nlohmann::ordered_json& value) {
  return (value.is_object() || value.is_array()) && value.empty();
}

void Emit(const nlohmann::ordered_json& value, size_t indent, std::string& out);

// EmitItem writes one array element: its block at indent + 2, with the
// first line's indentation ending in "- ".
void EmitItem(const nlohmann::ordered_json& item, size_t indent, std::string& out) {
  const std::string pad(indent, ' ');
  if (!item.is_structured() || IsEmptyContainer(item)) {
    out += pad + "- " + (item.is_structured() ? (item.is_object() ? "{}" : "[]") : Scalar(item)) +
           "\n";
    return;
  }
  std::string block;
  Emit(item, indent + 2, block);
  block.replace(0, indent + 2, pad + "- ");
  out += block;
}

void Emit(const nlohmann::ordered_json& value, size_t indent, std::string& out) {
  const std::string pad(indent, ' ');
  if (value.is_object()) {
    for (const auto& [key, child] : value.items()) {
      const std::string name = Scalar(nlohmann::ordered_json(key));
      if (child.is_structured() && !IsEmptyContainer(child)) {
        out += pad + name + ":\n";
        Emit(child, indent + 2, out);
      } else if (child.is_structured()) {
        out += pad + name + ": " + (child.is_object() ? "{}" : "[]") + "\n";
      } else {
        out += pad + name + ": " + Scalar(child) + "\n";
      }
    }
    return;
  }
  if (value.is_array()) {
    for (const auto& item : value) EmitItem(item, indent, out);
    return;
  }
  out += pad + Scalar(value) + "\n";
}

}  // namespace

std::string ToYaml(const nlohmann::ordered_json& value) {
  if (IsEmptyContainer(value)) return value.is_object() ? "{}\n" : "[]\n";
  std::string out;
  Emit(value, 0, out);
  return out;
}

}  // namespace smolvm::cli
