// File: client/cli/yaml.h
// -----------------------------------------------------------------------------
//
// ToYaml renders a JSON value as YAML (block style) for `--output yaml`: the
// same values and field names as `--output json`, so a script can switch
// between the two. Hand-rolled (no YAML library is a dependency): strings
// that YAML would read as something else (numbers, booleans, null, text with
// ": " or a leading indicator, control characters, empty) are written as
// JSON-style double-quoted strings, which YAML reads back unchanged.

#ifndef SMOLVM_CLIENT_CLI_YAML_H_
#define SMOLVM_CLIENT_CLI_YAML_H_

#include <string>

#include <nlohmann/json.hpp>

namespace smolvm::cli {

// ToYaml returns `value` as a YAML document (ending in a newline; an empty
// object is "{}", an empty array "[]"). Invalid UTF-8 in strings becomes
// U+FFFD.
std::string ToYaml(const nlohmann::ordered_json& value);

}  // namespace smolvm::cli

#endif  // SMOLVM_CLIENT_CLI_YAML_H_
