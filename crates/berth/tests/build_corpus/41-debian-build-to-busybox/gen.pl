use strict;
for my $i (1 .. 3) { printf "line %d: %s\n", $i, "x" x $i; }
