# A stand-in for Vagrant's configuration API, for test_vagrantfile.py: no Vagrant (or
# VirtualBox, libvirt, internet) on the test machine, so the Vagrantfile is loaded with this
# recorder instead, and the test checks what it configures. Every call on the `config`
# object is recorded as {"call": "config.vm.define[cp-01].vm.hostname=", "args": [...]}.
require "json"

LOG = []

class Recorder
  def initialize(path)
    @path = path
  end

  def method_missing(name, *args, **kw, &blk)
    call = "#{@path}.#{name}"
    LOG << { "call" => call, "args" => args.map(&:to_s),
             "kw" => kw.to_h { |k, v| [k.to_s, v.is_a?(Hash) ? v.to_h { |a, b| [a.to_s, b.to_s] } : v.to_s] } }
    return nil if name.to_s.end_with?("=")
    child = Recorder.new(args.empty? ? call : "#{call}[#{args.first}]")
    blk&.call(child)
    child
  end

  def respond_to_missing?(*) = true
end

module Vagrant
  def self.configure(version)
    LOG << { "call" => "configure", "args" => [version], "kw" => {} }
    yield Recorder.new("config")
  end
end

vagrantfile, *argv = ARGV
ARGV.replace(argv)
load vagrantfile
puts JSON.generate(LOG)
