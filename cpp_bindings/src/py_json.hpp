// JSON text exactly as Python's json.dumps(obj, sort_keys=True, separators=(",", ":"),
// ensure_ascii=True) writes it: the canonical form the package's manifest digest is taken over.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace tpem::detail {

std::string python_canonical_json(const nlohmann::json &value);

// repr() of a Python float: shortest round-trip digits, exponent form below 1e-4 and from 1e16.
std::string python_float_repr(double v);

}  // namespace tpem::detail
