#!/bin/sh
# A "compiler": turns main.in into an executable script plus data files.
set -e
mkdir -p /out/bin /out/share/hello
{ echo '#!/bin/sh'; sed 's/^/echo /' main.in; } > /out/bin/hello
chmod 0755 /out/bin/hello
cp main.in /out/share/hello/source.txt
md5sum main.in | cut -d' ' -f1 > /out/share/hello/checksum
