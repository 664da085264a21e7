# Finds files and prints `F MODE OWNER GROUP PATH` for each (sorted, once), then
# `D MODE OWNER GROUP DIR` for each directory above it up to /, as the shell chain it replaces
# did (`find ... | sort -u | while read f; do stat -c '%a %U %G %n' ...; dirname ...; done`):
# one perl process instead of a find, a sort and a stat and a dirname per line.
#
# No module is loaded (each costs the host milliseconds of CPU); nothing is followed that `find`
# and `stat` without -L would not follow; a name with a line break is skipped (it cannot be
# printed as one line). Arguments, in any number:
#   -f PATH      PATH if it is a file (following links, as `[ -f ]`)
#   -e PATH      PATH if it exists (as `[ -e ]`)
#   -home NAME   HOME/NAME, if it exists, for every account with uid >= 1000 and a home
#   -find DEPTH CASE ROOT... -- PATTERN... --
#                regular files under each ROOT (not following links, at most DEPTH levels
#                below it, 0 = no limit) whose name matches a PATTERN (`*` and `?` globs; CASE
#                `i`: case-insensitive, as find's -iname, `s`: as -name)
my %found;
sub add { my $p = shift; $found{$p} = 1 if index($p, "\n") < 0 }
sub glob_re {
    my ($g, $i) = @_;
    my $r = join '', map { $_ eq '*' ? '.*' : $_ eq '?' ? '.' : quotemeta $_ } split //, $g;
    return $i ? qr/\A$r\z/si : qr/\A$r\z/s;
}
sub walk {
    my ($dir, $depth, $max, $res) = @_;
    opendir(my $dh, $dir) or return;
    my @names = grep { $_ ne '.' && $_ ne '..' } readdir $dh;
    closedir $dh;
    for my $n (@names) {
        my $p = $dir eq '/' ? "/$n" : "$dir/$n";
        my @st = lstat $p or next;
        my $type = $st[2] & 0170000;
        if ($type == 0100000) {
            for my $re (@$res) { if ($n =~ $re) { add($p); last } }
        } elsif ($type == 0040000 && ($max == 0 || $depth + 1 < $max)) {
            walk($p, $depth + 1, $max, $res);
        }
    }
}
while (@ARGV) {
    my $op = shift @ARGV;
    if ($op eq '-f') { my $p = shift @ARGV; add($p) if -f $p }
    elsif ($op eq '-e') { my $p = shift @ARGV; add($p) if -e $p }
    elsif ($op eq '-home') {
        my $name = shift @ARGV;
        while (my @pw = getpwent) {
            next unless $pw[2] >= 1000 && defined $pw[7] && $pw[7] ne '';
            my $p = "$pw[7]/$name";
            add($p) if -e $p;
        }
        endpwent;
    } elsif ($op eq '-find') {
        my $max = shift @ARGV;
        my $i = (shift @ARGV) eq 'i';
        my (@roots, @res);
        while (@ARGV && $ARGV[0] ne '--') { push @roots, shift @ARGV }
        shift @ARGV;
        while (@ARGV && $ARGV[0] ne '--') { push @res, glob_re(shift @ARGV, $i) }
        shift @ARGV;
        for my $r (@roots) {
            my @st = lstat $r or next;
            walk($r, 0, $max, \@res) if ($st[2] & 0170000) == 0040000;
        }
    } else { exit 2 }
}
my (%user, %group);
sub line {
    my ($kind, $p) = @_;
    my @st = lstat $p or return '';
    my ($u, $g) = ($st[4], $st[5]);
    $user{$u} = (getpwuid $u)[0] // 'UNKNOWN' unless exists $user{$u};
    $group{$g} = (getgrgid $g)[0] // 'UNKNOWN' unless exists $group{$g};
    return sprintf("%s %o %s %s %s\n", $kind, $st[2] & 07777, $user{$u}, $group{$g}, $p);
}
sub dn { my $p = shift; $p =~ s{/+\z}{}; $p =~ s{[^/]*\z}{}; $p =~ s{/+\z}{}; $p eq '' ? '/' : $p }
my $out = '';
for my $f (sort keys %found) {
    $out .= line('F', $f);
    my $d = dn($f);
    while (1) { $out .= line('D', $d); last if $d eq '/'; $d = dn($d) }
}
print $out;
