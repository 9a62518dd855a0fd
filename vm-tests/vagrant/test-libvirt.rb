# vm-tests/run vagrant only (loaded by the Vagrantfile when CANARIE_VAGRANT_TEST names the
# run's node file, written by vm-tests/harness/vagrant.py). The libvirt settings that make
# the project's Vagrantfile boot here, as safely as the QEMU VM tests:
#
# - no libvirt network: each guest has one NIC on QEMU's user-mode networking with
#   restrict=on (the guest reaches nothing outside QEMU), plus one hostfwd from 127.0.0.1:PORT
#   in the run's loopback-only network namespace to the guest's sshd, which is how Vagrant
#   gets in. azure-sim runs inside the guest (provision.sh), as for a user.
# - TCG (domain type qemu), 1 vCPU and 1 GiB, direct kernel boot (the box's Vagrantfile).
# - the vm-tests guest inputs (expectations, the token's digest for the stand-in RKE2) over
#   fw_cfg and the results port over virtio-serial, exactly as vm-tests/harness/vm.py gives them.
require "json"

module CanarieVagrantTest
  NODES = JSON.parse(File.read(ENV.fetch("CANARIE_VAGRANT_TEST")))

  def self.configure(m, name)
    node = NODES.fetch(name) { abort "canarie: #{name} is not in #{ENV['CANARIE_VAGRANT_TEST']}" }
    m.ssh.host = "127.0.0.1"
    m.ssh.port = node.fetch("ssh_port")
    m.vm.boot_timeout = node.fetch("boot_timeout")
    m.vm.provider "libvirt" do |lv|
      lv.uri = node.fetch("libvirt_uri")
      lv.driver = "qemu"
      lv.cpus = 1
      lv.memory = 1024
      # No management network (it would be a libvirt NAT network with a bridge on the host);
      # qemu_use_agent only passes the plugin's "some network" check (a guest agent channel is
      # added, unused); the address comes from the override below.
      lv.mgmt_attach = false
      lv.qemu_use_agent = true
      lv.graphics_type = "none"
      lv.video_type = "none"
      lv.serial type: "file", source: { path: node.fetch("console") }
      net = ["user,id=canarie0,restrict=on,net=169.254.169.0/24,host=169.254.169.2",
             "hostfwd=tcp:127.0.0.1:#{node.fetch('ssh_port')}-169.254.169.10:22"].join(",")
      ["-netdev", net, "-device", "virtio-net-pci,netdev=canarie0,romfile=,bus=pci.0,addr=0x1e",
       # (fixed PCI slots: libvirt places its own devices from slot 2 up)
       "-fw_cfg", "name=opt/org.canarie/vmtest.json,file=#{node.fetch('inputs')}",
       "-fw_cfg", "name=opt/org.canarie/sim-ca.pem,file=#{node.fetch('ca')}",
       "-device", "virtio-serial-pci,id=canarie-serial,bus=pci.0,addr=0x1d",
       "-chardev", "file,id=results,path=#{node.fetch('results')}",
       "-device", "virtserialport,bus=canarie-serial.0,chardev=results,name=org.canarie.results"]
        .each { |arg| lv.qemuargs value: arg }
    end
  end
end

# vagrant-libvirt 0.11 learns a guest's address from libvirt's DHCP leases or the QEMU guest
# agent, neither of which exists with user-mode networking; Vagrant then takes ssh.host and
# ssh.port (127.0.0.1 and the hostfwd port) as configured above.
if defined?(VagrantPlugins::ProviderLibvirt)
  require "vagrant-libvirt/driver"
  VagrantPlugins::ProviderLibvirt::Driver.prepend(Module.new do
    def get_ipaddress(domain = nil)
      "127.0.0.1"
    end
  end)
end
