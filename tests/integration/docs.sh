#!/bin/sh
# The README's Lua API reference must name every function the bindings export:
# ctx methods (/*** @method in engine/lua_ctx.c), journey module functions
# (function M.x / M.x = in scripts/journey.lua) and trigger methods (function Trigger:x).
set -u
missing=0
for m in $(sed -n 's|^/\*\*\* @method ctx:\([a-z_]*\).*|\1|p' engine/lua_ctx.c); do
  grep -q "ctx:$m" README.md || { echo "README.md does not document ctx:$m"; missing=1; }
done
for f in $(sed -n 's/^function M\.\([a-z][a-z_]*\).*/\1/p; s/^M\.\([a-z][a-z_]*\) = .*/\1/p' scripts/journey.lua); do
  grep -q "j\.$f" README.md || { echo "README.md does not document j.$f"; missing=1; }
done
for t in $(sed -n 's/^function Trigger:\([a-z_]*\).*/\1/p' scripts/journey.lua); do
  grep -q "trigger:$t" README.md || { echo "README.md does not document trigger:$t"; missing=1; }
done
# the LuaCATS stubs (scripts/stubs/journey.lua) declare the same API
for m in $(sed -n 's|^/\*\*\* @method ctx:\([a-z_]*\).*|\1|p' engine/lua_ctx.c); do
  grep -q "^function Ctx:$m(" scripts/stubs/journey.lua || { echo "stubs do not declare ctx:$m"; missing=1; }
done
for f in $(sed -n 's/^function M\.\([a-z][a-z_]*\).*/\1/p; s/^M\.\([a-z][a-z_]*\) = .*/\1/p' scripts/journey.lua); do
  grep -q "^function j\.$f(" scripts/stubs/journey.lua || { echo "stubs do not declare j.$f"; missing=1; }
done
for t in $(sed -n 's/^function Trigger:\([a-z_]*\).*/\1/p' scripts/journey.lua); do
  grep -q "^function Trigger:$t(" scripts/stubs/journey.lua || { echo "stubs do not declare trigger:$t"; missing=1; }
done
n=$(sed -n 's|^/\*\*\* @method ctx:\([a-z_]*\).*|\1|p' engine/lua_ctx.c | wc -l)
[ "$n" -ge 8 ] || { echo "found only $n ctx methods: the extraction is broken"; missing=1; }
exit $missing
