# Finds files and prints `F MODE OWNER GROUP PATH` for each (sorted, once, at most 1000), then
# `D MODE OWNER GROUP DIR` for each directory above them up to / (each directory once), as the
# shell chain it replaces did (`find ... | sort -u | while read f; do stat -c '%a %U %G %n' ...;
# dirname ...; done`): one perl process and one `find` instead of a sort, a stat and a dirname
# per line.
#
# The walk is find's own (`find -P`: it never follows a link, and it notices a directory swapped
# for a link while it walks, which a walk by path name would follow); perl only reads its
# NUL-separated names. No module is loaded (each costs the host milliseconds of CPU). A name with
# a line break is skipped (it cannot be printed as one line). More than 1000 files: the first
# 1000 in byte order, then `more N` (a host full of copies must not make the controller compare
# millions of lines). Arguments, in any number:
#   -f PATH      PATH if it is a file (following links, as `[ -f ]`)
#   -e PATH      PATH if it exists (as `[ -e ]`)
#   -home NAME   HOME/NAME, if it exists, for every account with uid >= 1000 and a home
#   -find DEPTH CASE ROOT... -- PATTERN... --
#                regular files under each ROOT (at most DEPTH levels below it, 0 = no limit)
#                whose name matches a PATTERN (find's -iname with CASE `i`, -name with `s`)
my %found;
sub add { my $p = shift; $found{$p} = 1 if index($p, "\n") < 0 }
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
        my $test = (shift @ARGV) eq 'i' ? '-iname' : '-name';
        my (@roots, @names);
        while (@ARGV && $ARGV[0] ne '--') { my $r = shift @ARGV; push @roots, $r if $r =~ m{\A/} }
        shift @ARGV;
        while (@ARGV && $ARGV[0] ne '--') { push @names, (@names ? '-o' : ()), $test, shift @ARGV }
        shift @ARGV;
        next unless @roots && @names;
        my @depth = $max > 0 ? ('-maxdepth', $max) : ();
        open(my $fh, '-|', 'find', '-P', @roots, @depth, '-type', 'f', '(', @names, ')', '-print0') or exit 3;
        local $/ = "\0";
        while (my $p = <$fh>) { chomp $p; add($p) if $p ne '' }
        close $fh;
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
my @files = sort keys %found;
my $more = @files > 1000 ? @files - 1000 : 0;
splice(@files, 1000) if $more;
my %seen;
for my $f (@files) {
    $out .= line('F', $f);
    my $d = dn($f);
    while (!$seen{$d}++) { $out .= line('D', $d); last if $d eq '/'; $d = dn($d) }
}
$out .= "more $more\n" if $more;
print $out;
